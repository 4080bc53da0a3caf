//! The Deployment controller: what each of its rounds proposes, a pure function of the state,
//! the changed keys and the time, stepped by its owner (orch-raft's leader-only loop
//! framework), as Kubernetes' deployment controller.
//!
//! A Deployment controls one ReplicaSet per pod template: the set whose template equals the
//! Deployment's (ignoring the `pod-template-hash` label) is the new one, the others are old.
//! The new set is named `<deployment>-<hash>`, where the hash is FNV-1a of the template (and
//! of `status.collisionCount`, raised when another object holds that name), written with
//! Kubernetes' alphabet of consonants and digits; its labels, selector and template carry the
//! hash as `pod-template-hash`. Its `deployment.kubernetes.io/revision` is one more than the
//! old sets' largest, and the Deployment carries the same annotation.
//!
//! Each sync does what Kubernetes' does, in its order: a deleted Deployment gets its status
//! only; a paused one, or one whose replicas changed (a set's
//! `deployment.kubernetes.io/desired-replicas` differs), is scaled, proportionally across its
//! active sets during a rollout; otherwise it rolls out: `RollingUpdate` scales the new set up
//! within `maxSurge` and the old ones down (the unavailable pods first) within
//! `maxUnavailable`, counting availability after `minReadySeconds` from the sets' status;
//! `Recreate` scales the old sets to zero, waits until their pods are gone, then creates the
//! new one at full size. A complete rollout deletes the old, empty sets beyond
//! `revisionHistoryLimit`. The status (replicas, updated, ready, available, unavailable,
//! observed generation) and the conditions `Available` and `Progressing` (with
//! `progressDeadlineSeconds`, and `DeploymentPaused` / `DeploymentResumed`) are written when
//! they change.
//!
//! Which deployments a round syncs: every one on a full round; else those that changed, the
//! owners of the sets that changed (as they are now and as they were when last seen), the
//! `Recreate` deployments waiting for old pods when pods changed, and those whose timer is due
//! (the progress deadline). No expectations are needed: every write names its object's
//! resourceVersion (a decision made on a stale state is refused) and the new set's name is
//! derived from its template (a second create of it fails), so a round that runs again before
//! its earlier proposals applied repeats nothing.
//!
//! Rollback ([`rollback_template`]) is a command of the state machine (`RolloutUndo`), which
//! calls this module's choice of template, so that it is atomic and answers at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::adopt::{Orphans, adopt, would_adopt};
use crate::apps_v1::{
    Deployment, DeploymentCondition, DeploymentStatus, DeploymentStrategyType, POD_TEMPLATE_HASH_LABEL,
    REVISION_ANNOTATION, ReplicaSet, ReplicaSetSpec,
};
use crate::command::{Command, Preconditions};
use crate::core_v1::{PodPhase, PodTemplateSpec};
use crate::events::{EventType, Record};
use crate::ids::Uid;
use crate::intstr::IntOrString;
use crate::meta::{ConditionStatus, ObjectMeta, OwnerReference};
use crate::object::{Kind, Object, ObjectKey};
use crate::reconcile::{Fate, Reconciler};
use crate::selector::Selector;
use crate::state::State;
use crate::time::Time;

/// The annotation on a set naming the Deployment's replicas when the set was last sized.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// The annotation on a set naming the Deployment's replicas plus its surge then.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
/// The annotation on a set listing the revisions it held before (a rollback renumbers it).
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// The longest `revision-history` annotation; the oldest entries go first (Kubernetes').
pub const REVISION_HISTORY_MAX_CHARS: usize = 2000;
/// kubectl's annotation of the last applied manifest: never copied to a set.
use crate::merge::LAST_APPLIED_ANNOTATION;

/// The `Available` condition's type.
pub const AVAILABLE: &str = "Available";
/// The `Progressing` condition's type.
pub const PROGRESSING: &str = "Progressing";
/// `Progressing` reason: the rollout is complete.
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
/// `Progressing` reason: the rollout moved.
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
/// `Progressing` reason: the new set was created.
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
/// `Progressing` reason: the new set was found.
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
/// `Progressing` reason: no progress within `progressDeadlineSeconds`.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
/// `Progressing` reason: paused.
pub const PAUSED: &str = "DeploymentPaused";
/// `Progressing` reason: resumed.
pub const RESUMED: &str = "DeploymentResumed";

/// Kubernetes' alphabet for generated names: no vowels (no words), no look-alikes.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The longest object name (an RFC 1123 subdomain).
const NAME_MAX: usize = 253;

fn fnv1a(mut hash: u32, bytes: &[u8]) -> u32 {
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The `pod-template-hash` of `template` with `collision_count`: FNV-1a (32 bits) of its JSON
/// form and of the count, its decimal digits mapped onto [`ALPHANUMS`] as Kubernetes'
/// `SafeEncodeString`, so at most 10 characters, a valid label value.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    // The model serialises with fields in declaration order and maps sorted: the same bytes
    // on every replica and toolchain. A model cannot fail to serialise.
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut hash = fnv1a(0x811c_9dc5, &json);
    if let Some(count) = collision_count {
        hash = fnv1a(hash, count.to_string().as_bytes());
    }
    hash.to_string().bytes().map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()])).collect()
}

/// `template`'s metadata without the hash label.
fn meta_without_hash(template: &PodTemplateSpec) -> ObjectMeta {
    let mut meta = template.metadata.clone();
    meta.labels.remove(POD_TEMPLATE_HASH_LABEL);
    meta
}

/// Whether two templates are equal but for the `pod-template-hash` label.
pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    a.spec == b.spec && meta_without_hash(a) == meta_without_hash(b)
}

/// The ReplicaSets of `d`'s namespace that `d` controls (a controller reference to its uid),
/// by the owner index; oldest first (creation, then name).
pub fn controlled_sets(state: &State, d: &Deployment) -> Vec<Arc<ReplicaSet>> {
    let Some(uid) = d.metadata.uid else { return Vec::new() };
    let namespace = d.metadata.namespace_str();
    // Owner references never cross namespaces (as in Kubernetes): a set elsewhere naming this
    // uid is not this Deployment's.
    let mut sets: Vec<Arc<ReplicaSet>> = state
        .owned_by(uid)
        .filter(|k| k.kind == Kind::ReplicaSet && k.namespace == namespace)
        .filter_map(|k| match state.get(k) {
            Some(Object::ReplicaSet(rs)) if rs.metadata.controller_ref().is_some_and(|r| r.uid == uid) => {
                Some(Arc::clone(rs))
            }
            _ => None,
        })
        .collect();
    sets.sort_by(|a, b| {
        (a.metadata.creation_timestamp, &a.metadata.name).cmp(&(b.metadata.creation_timestamp, &b.metadata.name))
    });
    sets
}

/// The prefix of the deployment controller's annotations.
pub const ANNOTATION_PREFIX: &str = "deployment.kubernetes.io/";

/// Whether `rollout undo` leaves annotation `key` of the Deployment as it is rather than take
/// the revision's (kubectl's list).
pub fn is_rollback_skipped_annotation(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED_ANNOTATION
            | REVISION_ANNOTATION
            | REVISION_HISTORY_ANNOTATION
            | DESIRED_REPLICAS_ANNOTATION
            | MAX_REPLICAS_ANNOTATION
            | "deprecated.deployment.rollback.to"
    )
}

/// The set `rollout undo` goes back to: that of revision `to_revision`, or with 0 the one with
/// the revision before the newest.
pub fn rollback_set(state: &State, d: &Deployment, to_revision: i64) -> Option<Arc<ReplicaSet>> {
    let mut sets = controlled_sets(state, d);
    // Ties in name order, as the state machine has always chosen.
    sets.sort_by(|a, b| {
        (a.revision().unwrap_or(0), &a.metadata.name).cmp(&(b.revision().unwrap_or(0), &b.metadata.name))
    });
    if to_revision > 0 {
        sets.into_iter().find(|rs| rs.revision() == Some(to_revision))
    } else {
        sets.into_iter().rev().nth(1)
    }
}

/// The template `rollout undo` puts back into `d`: that of its set of revision `to_revision`,
/// or with 0 of the set with the revision before the newest; without the hash label. An
/// error says why there is none.
pub fn rollback_template(state: &State, d: &Deployment, to_revision: i64) -> Result<PodTemplateSpec, String> {
    let target = rollback_set(state, d, to_revision);
    let name = crate::validation::q(&d.metadata.name);
    let Some(target) = target else {
        return Err(if to_revision > 0 {
            format!("toRevision: Invalid value: {to_revision}: deployment {name} has no such revision")
        } else {
            format!("deployment {name} has no earlier revision to roll back to")
        });
    };
    let mut template = target.spec.template.clone();
    template.metadata.labels.remove(POD_TEMPLATE_HASH_LABEL);
    Ok(template)
}

/// The progress deadline in seconds; none when unset or `i32::MAX` (Kubernetes'
/// `HasProgressDeadline`).
fn deadline(d: &Deployment) -> Option<i32> {
    d.spec.progress_deadline_seconds.filter(|s| *s != i32::MAX)
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1).max(0)
}

fn rolling(d: &Deployment) -> bool {
    d.spec.strategy.type_ != Some(DeploymentStrategyType::Recreate)
}

/// `maxSurge` and `maxUnavailable` resolved against the replicas, as Kubernetes'
/// `ResolveFenceposts`: surge rounded up, unavailable down, and never both zero.
fn fenceposts(d: &Deployment) -> (i32, i32) {
    let want = i64::from(replicas(d));
    let default = IntOrString::Str(crate::defaults::DEFAULT_ROLLING_UPDATE_PERCENT.into());
    let ru = d.spec.strategy.rolling_update.as_ref();
    let resolve = |v: Option<&IntOrString>, up: bool| {
        let v = v.unwrap_or(&default).scaled_value(want, up).unwrap_or(0);
        i32::try_from(v.clamp(0, i64::from(i32::MAX))).unwrap_or(0)
    };
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), true);
    let mut unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

fn max_surge(d: &Deployment) -> i32 {
    if rolling(d) { fenceposts(d).0 } else { 0 }
}

fn max_unavailable(d: &Deployment) -> i32 {
    if !rolling(d) || replicas(d) == 0 { 0 } else { fenceposts(d).1.min(replicas(d)) }
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.get(key).and_then(|v| v.parse().ok())
}

/// Sets `conditions`' condition of `type_` as Kubernetes' `SetDeploymentCondition`: nothing
/// changes when status and reason are the same; the transition time stays when the status
/// does.
fn set_condition(
    conditions: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: String,
    now: Time,
) {
    let current = conditions.iter().position(|c| c.type_ == type_);
    let mut transition = Some(now);
    if let Some(i) = current {
        let c = &conditions[i];
        if c.status == status && c.reason.as_deref() == Some(reason) {
            return;
        }
        if c.status == status {
            transition = c.last_transition_time;
        }
        conditions.remove(i);
    }
    conditions.push(DeploymentCondition {
        type_: type_.into(),
        status,
        last_update_time: Some(now),
        last_transition_time: transition,
        reason: Some(reason.into()),
        message: Some(message.into()),
    });
}

fn condition<'a>(conditions: &'a [DeploymentCondition], type_: &str) -> Option<&'a DeploymentCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// One sync of one Deployment: a working copy of its sets, edited in place, and what to write.
struct Sync<'a> {
    state: &'a State,
    d: &'a Deployment,
    now: Time,
    /// Its sets, oldest first; the new one (if any) at `new`.
    sets: Vec<ReplicaSet>,
    new: Option<usize>,
    /// The sets (by index) whose spec or annotations this sync changed.
    edited: BTreeSet<usize>,
    /// A set created this sync (its index).
    created: Option<usize>,
    deletes: Vec<Command>,
    conditions: Vec<DeploymentCondition>,
    collision_count: Option<i32>,
    /// The Deployment's revision annotation to write, if it changes.
    revision: Option<i64>,
    /// A `Recreate` rollout waits for old pods to go.
    waits_for_pods: bool,
    /// The sets' wanted pods before this sync changed any (what the status counts).
    spec_before: i32,
}

impl<'a> Sync<'a> {
    fn new(state: &'a State, d: &'a Deployment, now_ms: i64) -> Self {
        let sets: Vec<ReplicaSet> = controlled_sets(state, d).iter().map(|rs| (**rs).clone()).collect();
        let new = sets.iter().position(|rs| same_template(&rs.spec.template, &d.spec.template));
        let spec_before = sets.iter().map(|rs| rs.spec.replicas.unwrap_or(1)).fold(0i32, i32::saturating_add);
        Self {
            spec_before,
            state,
            d,
            now: Time::from_millis(now_ms),
            sets,
            new,
            edited: BTreeSet::new(),
            created: None,
            deletes: Vec::new(),
            conditions: d.status.conditions.clone(),
            collision_count: d.status.collision_count,
            revision: None,
            waits_for_pods: false,
        }
    }

    fn old(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.sets.len()).filter(move |i| Some(*i) != self.new)
    }

    fn spec_replicas(&self, i: usize) -> i32 {
        self.sets[i].spec.replicas.unwrap_or(1)
    }

    /// Set `i`'s available pods as far as they count towards a scale-down: no more than its
    /// size (its status may not yet show a scale-down this controller made).
    fn available(&self, i: usize) -> i32 {
        self.sets[i].status.available_replicas.unwrap_or(0).clamp(0, self.spec_replicas(i).max(0))
    }

    fn sum(&self, f: impl Fn(&ReplicaSet) -> i32) -> i32 {
        self.sets.iter().map(f).fold(0i32, i32::saturating_add)
    }

    fn total_spec(&self) -> i32 {
        self.sum(|rs| rs.spec.replicas.unwrap_or(1))
    }

    fn has_deadline(&self) -> bool {
        deadline(self.d).is_some()
    }

    /// Sets set `i` to `n` replicas with the Deployment's current sizes in its annotations;
    /// whether its size changed.
    fn scale(&mut self, i: usize, n: i32) -> bool {
        let want = replicas(self.d).to_string();
        let max = replicas(self.d).saturating_add(max_surge(self.d)).to_string();
        let rs = &mut self.sets[i];
        let resized = rs.spec.replicas.unwrap_or(1) != n;
        let stale = rs.metadata.annotations.get(DESIRED_REPLICAS_ANNOTATION) != Some(want.as_str())
            || rs.metadata.annotations.get(MAX_REPLICAS_ANNOTATION) != Some(max.as_str());
        if resized || stale {
            rs.spec.replicas = Some(n);
            rs.metadata.annotations.insert(DESIRED_REPLICAS_ANNOTATION, want);
            rs.metadata.annotations.insert(MAX_REPLICAS_ANNOTATION, max);
            self.edited.insert(i);
        }
        resized
    }

    /// The largest revision of the old sets.
    fn max_old_revision(&self) -> i64 {
        self.old().filter_map(|i| self.sets[i].revision()).max().unwrap_or(0)
    }

    /// Brings the existing new set's revision, annotations and `minReadySeconds` up to date,
    /// and the Deployment's revision annotation to the new set's (Kubernetes'
    /// `getAllReplicaSetsAndSyncRevision`).
    fn sync_revision(&mut self) {
        let Some(i) = self.new else { return };
        let revision = self.max_old_revision().saturating_add(1);
        let d = self.d;
        let rs = &mut self.sets[i];
        let mut changed = false;
        let old = rs.revision().unwrap_or(0);
        if old < revision {
            rs.metadata.annotations.insert(REVISION_ANNOTATION, revision.to_string());
            if old > 0 {
                let history = with_revision(rs.metadata.annotations.get(REVISION_HISTORY_ANNOTATION), old);
                rs.metadata.annotations.insert(REVISION_HISTORY_ANNOTATION, history);
            }
            changed = true;
        }
        changed |= copy_annotations(d, rs);
        if rs.spec.min_ready_seconds != d.spec.min_ready_seconds {
            rs.spec.min_ready_seconds = d.spec.min_ready_seconds;
            changed = true;
        }
        if changed {
            self.edited.insert(i);
        }
        let revision = rs.revision().unwrap_or(revision);
        if d.metadata.annotations.get(REVISION_ANNOTATION) != Some(revision.to_string().as_str()) {
            self.revision = Some(revision);
        }
        if self.has_deadline() && condition(&self.conditions, PROGRESSING).is_none() {
            let message = format!("Found new replica set {}", crate::validation::q(&self.sets[i].metadata.name));
            set_condition(&mut self.conditions, PROGRESSING, ConditionStatus::True, FOUND_NEW_RS, message, self.now);
        }
    }

    /// Creates the new set with `n` replicas, unless another object holds its name (the
    /// collision count is then raised, and the next round tries another name); whether it
    /// was created.
    fn create_new(&mut self, n: i32) -> bool {
        let d = self.d;
        let hash = template_hash(&d.spec.template, self.collision_count);
        let mut prefix = d.metadata.name.to_string();
        // Names are RFC 1123 subdomains: ASCII, so any byte is a boundary.
        prefix.truncate(NAME_MAX - 1 - hash.len());
        let name = format!("{prefix}-{hash}");
        let namespace = d.metadata.namespace_str();
        if self.state.get(&ObjectKey::new(Kind::ReplicaSet, namespace, &name)).is_some() {
            // Not ours, or ours but with another template (a set this Deployment controls
            // with this template would have been found): a hash collision.
            self.collision_count = Some(self.collision_count.unwrap_or(0).saturating_add(1));
            return false;
        }
        let revision = self.max_old_revision().saturating_add(1);
        let mut template = d.spec.template.clone();
        template.metadata.labels.insert(POD_TEMPLATE_HASH_LABEL, hash.clone());
        let mut selector = d.spec.selector.clone();
        selector.match_labels.insert(POD_TEMPLATE_HASH_LABEL, hash);
        let mut rs = ReplicaSet::default();
        rs.metadata.name = name.clone().into();
        rs.metadata.namespace = d.metadata.namespace.clone();
        rs.metadata.labels = template.metadata.labels.clone();
        rs.metadata.owner_references = vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: d.metadata.name.clone(),
            uid: d.metadata.uid.unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }];
        copy_annotations(d, &mut rs);
        rs.metadata.annotations.insert(REVISION_ANNOTATION, revision.to_string());
        rs.spec = ReplicaSetSpec { replicas: Some(0), selector, template, min_ready_seconds: d.spec.min_ready_seconds };
        self.sets.push(rs);
        let i = self.sets.len() - 1;
        self.new = Some(i);
        self.created = Some(i);
        self.scale(i, n);
        self.edited.remove(&i);
        if d.metadata.annotations.get(REVISION_ANNOTATION) != Some(revision.to_string().as_str()) {
            self.revision = Some(revision);
        }
        if self.has_deadline() {
            let message = format!("Created new replica set {}", crate::validation::q(&name));
            set_condition(&mut self.conditions, PROGRESSING, ConditionStatus::True, NEW_RS_CREATED, message, self.now);
        }
        true
    }

    /// Whether a set's `desired-replicas` differs from the Deployment's replicas.
    fn scaling_event(&self) -> bool {
        let want = replicas(self.d);
        self.sets
            .iter()
            .filter(|rs| rs.spec.replicas.unwrap_or(1) > 0)
            .any(|rs| annotation_i32(rs, DESIRED_REPLICAS_ANNOTATION).is_some_and(|n| n != want))
    }

    /// Scales the sets to the Deployment's replicas without rolling out (Kubernetes'
    /// `scale`): the only active set (or the newest) takes them all; during a rolling update
    /// what is added or taken goes to the active sets in proportion to their sizes.
    fn scale_only(&mut self) {
        let want = replicas(self.d);
        let active: Vec<usize> = (0..self.sets.len()).filter(|i| self.spec_replicas(*i) > 0).collect();
        let only = match active.len() {
            0 => self.new.or_else(|| self.sets.len().checked_sub(1)),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = only {
            self.scale(i, want);
            return;
        }
        if let Some(n) = self.new
            && self.spec_replicas(n) == want
            && annotation_i32(&self.sets[n], DESIRED_REPLICAS_ANNOTATION) == Some(want)
            && self.sets[n].status.available_replicas.unwrap_or(0) >= want
        {
            // The new set is saturated: the old ones go.
            for i in self.old().collect::<Vec<_>>() {
                self.scale(i, 0);
            }
            return;
        }
        if rolling(self.d) {
            self.scale_proportionally(&active);
        }
        // Stale annotations of sets left as they were are refreshed too, so that the
        // scaling event ends (for `Recreate` too, which scales nothing here).
        for i in active {
            let n = self.spec_replicas(i);
            self.scale(i, n);
        }
    }

    /// What is added to or taken from the active sets goes in proportion to their sizes
    /// (Kubernetes' `GetReplicaSetProportion`: each set's size times the Deployment's new
    /// maximum over the maximum it was sized for, rounded), the leftover to the largest.
    fn scale_proportionally(&mut self, active: &[usize]) {
        let want = i64::from(replicas(self.d));
        let with_surge = want + i64::from(max_surge(self.d));
        let current: i64 = active.iter().map(|i| i64::from(self.spec_replicas(*i))).sum();
        let to_add = if want > 0 { with_surge } else { 0 } - current;
        if to_add == 0 {
            return;
        }
        // Larger sets first; newer first when adding, older first when taking away.
        let mut order = active.to_vec();
        order.sort_by_key(|i| {
            let created = self.sets[*i].metadata.creation_timestamp.map_or(0, Time::as_millis);
            (std::cmp::Reverse(self.spec_replicas(*i)), if to_add > 0 { -created } else { created }, *i)
        });
        let mut added = 0i64;
        let mut sizes: Vec<(usize, i64)> = Vec::new();
        for i in &order {
            let size = i64::from(self.spec_replicas(*i));
            let fraction = if want == 0 {
                -size
            } else {
                let annotated = annotation_i32(&self.sets[*i], MAX_REPLICAS_ANNOTATION)
                    .map(i64::from)
                    .unwrap_or_else(|| i64::from(self.d.status.replicas.unwrap_or(0)));
                // Rounded half up: (2ab + c) / 2c, all positive.
                if annotated > 0 { (2 * size * with_surge + annotated) / (2 * annotated) - size } else { 0 }
            };
            let left = to_add - added;
            let share = if size == 0 || left == 0 {
                0
            } else if to_add > 0 {
                fraction.min(left)
            } else {
                fraction.max(left)
            };
            added += share;
            sizes.push((*i, size + share));
        }
        if let Some(first) = sizes.first_mut() {
            first.1 += to_add - added;
        }
        for (i, size) in sizes {
            self.scale(i, i32::try_from(size.clamp(0, i64::from(i32::MAX))).unwrap_or(0));
        }
    }

    /// The new set's size for a rolling update (Kubernetes' `NewRSNewReplicas`).
    fn new_replicas(&self, new_size: i32) -> i32 {
        let want = replicas(self.d);
        let max_total = want.saturating_add(max_surge(self.d));
        let current = self.total_spec();
        if current >= max_total {
            return new_size;
        }
        new_size + (max_total - current).min(want - new_size).max(0)
    }

    fn rolling_update(&mut self) {
        if self.new.is_none() {
            let n = self.new_replicas(0);
            if !self.create_new(n) {
                return;
            }
        } else {
            self.sync_revision();
        }
        let Some(new) = self.new else { return };
        // The new set up.
        let want = replicas(self.d);
        let size = self.spec_replicas(new);
        let target = if size > want { want } else { self.new_replicas(size) };
        if target != size && self.created != Some(new) {
            self.scale(new, target);
            return;
        }
        // The old ones down.
        if self.scale_down_old(new) {
            return;
        }
        if complete(self.d, &self.d.status) {
            self.clean_up();
        }
    }

    /// Scales old sets down as far as `maxUnavailable` allows: their unavailable pods first
    /// (oldest set first), then available ones (Kubernetes' `reconcileOldReplicaSets`).
    fn scale_down_old(&mut self, new: usize) -> bool {
        let old: Vec<usize> = self.old().collect();
        if old.iter().all(|i| self.spec_replicas(*i) == 0) {
            return false;
        }
        let min_available = replicas(self.d) - max_unavailable(self.d);
        let new_unavailable = self.spec_replicas(new) - self.available(new);
        let max_scaled_down = self.total_spec() - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let mut scaled = false;
        let mut cleaned = 0;
        for i in &old {
            if cleaned >= max_scaled_down {
                break;
            }
            let size = self.spec_replicas(*i);
            let available = self.available(*i);
            if size == 0 || size <= available {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(size - available);
            scaled |= self.scale(*i, size - down);
            cleaned += down;
        }
        let available = (0..self.sets.len()).map(|i| self.available(i)).fold(0i32, i32::saturating_add);
        if available > min_available {
            let mut total = available - min_available;
            for i in &old {
                if total <= 0 {
                    break;
                }
                let size = self.spec_replicas(*i);
                if size == 0 {
                    continue;
                }
                let down = size.min(total);
                scaled |= self.scale(*i, size - down);
                total -= down;
            }
        }
        scaled
    }

    /// Whether a pod of an old set is still there and not finished (terminating ones count).
    fn old_pods_running(&self) -> bool {
        self.old().any(|i| {
            let rs = &self.sets[i];
            if rs.status.replicas > 0 {
                return true;
            }
            let Some(uid) = rs.metadata.uid else { return false };
            self.state.owned_by(uid).filter(|k| k.kind == Kind::Pod).any(|k| match self.state.get(k) {
                Some(Object::Pod(p)) => {
                    p.metadata.controller_ref().is_some_and(|r| r.uid == uid)
                        && !matches!(p.status.phase, Some(PodPhase::Succeeded | PodPhase::Failed))
                }
                _ => false,
            })
        })
    }

    fn recreate(&mut self) {
        if self.new.is_some() {
            self.sync_revision();
        }
        let mut scaled = false;
        for i in self.old().collect::<Vec<_>>() {
            if self.spec_replicas(i) > 0 {
                scaled |= self.scale(i, 0);
            }
        }
        if scaled {
            return;
        }
        if self.old_pods_running() {
            self.waits_for_pods = true;
            return;
        }
        let want = replicas(self.d);
        match self.new {
            None => {
                self.create_new(want);
            }
            Some(new) => {
                self.scale(new, want);
            }
        }
        if complete(self.d, &self.d.status) {
            self.clean_up();
        }
    }

    /// Deletes old sets beyond `revisionHistoryLimit`, lowest revision first, as Kubernetes'
    /// `cleanupDeployment`: every live old set counts, but only one with no pods, none wanted
    /// and its spec observed is deleted.
    fn clean_up(&mut self) {
        let limit = usize::try_from(self.d.spec.revision_history_limit.unwrap_or(10)).unwrap_or(0);
        let mut alive: Vec<usize> =
            self.old().filter(|i| self.sets[*i].metadata.deletion_timestamp.is_none()).collect();
        if alive.len() <= limit {
            return;
        }
        alive.sort_by_key(|i| (self.sets[*i].revision().unwrap_or(0), *i));
        let excess = alive.len() - limit;
        for i in &alive[..excess] {
            let rs = &self.sets[*i];
            if self.edited.contains(i)
                || rs.spec.replicas != Some(0)
                || rs.status.replicas != 0
                || rs.status.observed_generation < rs.metadata.generation
            {
                continue;
            }
            self.deletes.push(Command::Delete {
                key: ObjectKey::new(Kind::ReplicaSet, rs.metadata.namespace_str(), &rs.metadata.name),
                grace_period_seconds: None,
                preconditions: Preconditions { uid: rs.metadata.uid, resource_version: rs.metadata.resource_version },
                propagation_policy: None,
            });
        }
    }

    /// The status from the sets' (Kubernetes' `calculateStatus`), with `Available`.
    fn status(&mut self) -> DeploymentStatus {
        let d = self.d;
        let available = self.sum(|rs| rs.status.available_replicas.unwrap_or(0));
        let want = replicas(d);
        if available >= want - max_unavailable(d) {
            let message = "Deployment has minimum availability.".to_owned();
            set_condition(
                &mut self.conditions,
                AVAILABLE,
                ConditionStatus::True,
                "MinimumReplicasAvailable",
                message,
                self.now,
            );
        } else {
            let message = "Deployment does not have minimum availability.".to_owned();
            set_condition(
                &mut self.conditions,
                AVAILABLE,
                ConditionStatus::False,
                "MinimumReplicasUnavailable",
                message,
                self.now,
            );
        }
        DeploymentStatus {
            observed_generation: d.metadata.generation,
            replicas: Some(self.sum(|rs| rs.status.replicas)),
            updated_replicas: Some(self.new.map_or(0, |i| self.sets[i].status.replicas)),
            ready_replicas: Some(self.sum(|rs| rs.status.ready_replicas.unwrap_or(0))),
            available_replicas: Some(available),
            unavailable_replicas: Some((self.spec_before - available).max(0)),
            conditions: self.conditions.clone(),
            collision_count: self.collision_count,
        }
    }

    /// The status with `Progressing` (Kubernetes' `syncRolloutStatus`); when the deadline
    /// may still pass, when to look again.
    fn rollout_status(&mut self) -> (DeploymentStatus, Option<i64>) {
        let mut status = self.status();
        let d = self.d;
        let Some(deadline) = deadline(d) else {
            status.conditions.retain(|c| c.type_ != PROGRESSING);
            return (status, None);
        };
        let new_name = self.new.map(|i| crate::validation::q(&self.sets[i].metadata.name));
        let current = condition(&status.conditions, PROGRESSING).cloned();
        let done = status.replicas == status.updated_replicas
            && current.as_ref().is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
        if !done {
            if complete(d, &status) {
                let message = match &new_name {
                    Some(name) => format!("ReplicaSet {name} has successfully progressed."),
                    None => {
                        format!("Deployment {} has successfully progressed.", crate::validation::q(&d.metadata.name))
                    }
                };
                set_condition(
                    &mut status.conditions,
                    PROGRESSING,
                    ConditionStatus::True,
                    NEW_RS_AVAILABLE,
                    message,
                    self.now,
                );
            } else if progressing(&d.status, &status) {
                let message = match &new_name {
                    Some(name) => format!("ReplicaSet {name} is progressing."),
                    None => format!("Deployment {} is progressing.", crate::validation::q(&d.metadata.name)),
                };
                // Progress moves the update time even with the same reason.
                let transition = current
                    .as_ref()
                    .filter(|c| c.status == ConditionStatus::True)
                    .and_then(|c| c.last_transition_time)
                    .or(Some(self.now));
                status.conditions.retain(|c| c.type_ != PROGRESSING);
                status.conditions.push(DeploymentCondition {
                    type_: PROGRESSING.into(),
                    status: ConditionStatus::True,
                    last_update_time: Some(self.now),
                    last_transition_time: transition,
                    reason: Some(RS_UPDATED.into()),
                    message: Some(message.into()),
                });
            } else if timed_out(&status.conditions, deadline, self.now) {
                let message = match &new_name {
                    Some(name) => format!("ReplicaSet {name} has timed out progressing."),
                    None => format!("Deployment {} has timed out progressing.", crate::validation::q(&d.metadata.name)),
                };
                set_condition(
                    &mut status.conditions,
                    PROGRESSING,
                    ConditionStatus::False,
                    TIMED_OUT,
                    message,
                    self.now,
                );
            }
        }
        // Not complete and not yet timed out: look again when the deadline passes.
        let wake = match condition(&status.conditions, PROGRESSING) {
            Some(c)
                if !complete(d, &status)
                    && c.reason.as_deref() != Some(TIMED_OUT)
                    && c.reason.as_deref() != Some(NEW_RS_AVAILABLE) =>
            {
                c.last_update_time.map(|t| t.as_millis().saturating_add(i64::from(deadline) * 1000).saturating_add(1))
            }
            _ => None,
        };
        (status, wake)
    }

    /// `Progressing` when paused or resumed (Kubernetes' `checkPausedConditions`).
    fn paused_conditions(&mut self) {
        if !self.has_deadline() {
            return;
        }
        let current = condition(&self.conditions, PROGRESSING);
        if current.is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT)) {
            return;
        }
        let paused_now = current.is_some_and(|c| c.reason.as_deref() == Some(PAUSED));
        if self.d.spec.paused == Some(true) && !paused_now {
            let message = "Deployment is paused".to_owned();
            set_condition(&mut self.conditions, PROGRESSING, ConditionStatus::Unknown, PAUSED, message, self.now);
        } else if self.d.spec.paused != Some(true) && paused_now {
            let message = "Deployment is resumed".to_owned();
            set_condition(&mut self.conditions, PROGRESSING, ConditionStatus::Unknown, RESUMED, message, self.now);
        }
    }

    /// Runs the sync; its commands, and when to look again.
    fn run(mut self) -> (Vec<Command>, Option<i64>, Option<BTreeSet<Uid>>) {
        let d = self.d;
        let (status, wake) = if d.metadata.deletion_timestamp.is_some() {
            (self.status(), None)
        } else {
            self.paused_conditions();
            if d.spec.paused == Some(true) || self.scaling_event() {
                if self.new.is_some() {
                    self.sync_revision();
                }
                self.scale_only();
                if d.spec.paused == Some(true) {
                    self.clean_up();
                }
                (self.status(), None)
            } else {
                if rolling(d) {
                    self.rolling_update();
                } else {
                    self.recreate();
                }
                self.rollout_status()
            }
        };
        let mut commands = Vec::new();
        if let Some(i) = self.created {
            commands.push(Command::Create(Object::from(self.sets[i].clone())));
        }
        for i in &self.edited {
            if Some(*i) != self.created {
                commands.push(Command::Update(Object::from(self.sets[*i].clone())));
            }
        }
        commands.append(&mut self.deletes);
        let status_changed = status != d.status;
        match self.revision {
            Some(revision) => {
                // The annotation first, then the status, in one batch under the annotation
                // update's compare-and-set.
                let mut updated = d.clone();
                updated.metadata.annotations.insert(REVISION_ANNOTATION, revision.to_string());
                let mut batch = vec![Command::Update(Object::from(updated.clone()))];
                if status_changed {
                    updated.metadata.resource_version = None;
                    updated.status = status;
                    batch.push(Command::UpdateStatus(Object::from(updated)));
                }
                commands.push(Command::Batch(batch));
            }
            None if status_changed => {
                let mut updated = d.clone();
                updated.status = status;
                commands.push(Command::UpdateStatus(Object::from(updated)));
            }
            None => {}
        }
        let waits = self.waits_for_pods.then(|| self.old().filter_map(|i| self.sets[i].metadata.uid).collect());
        (commands, wake, waits)
    }
}

/// A `revision-history` with `old` appended, its oldest entries dropped beyond
/// [`REVISION_HISTORY_MAX_CHARS`] (Kubernetes' cap).
fn with_revision(history: Option<&str>, old: i64) -> String {
    let history = match history {
        Some(h) if !h.is_empty() => format!("{h},{old}"),
        _ => old.to_string(),
    };
    let mut kept = history.as_str();
    while kept.len() > REVISION_HISTORY_MAX_CHARS {
        match kept.split_once(',') {
            Some((_, rest)) => kept = rest,
            None => break,
        }
    }
    kept.to_owned()
}

/// Copies `d`'s annotations (but the controller's own and kubectl's last-applied one) to
/// `rs`; whether any changed.
fn copy_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter() {
        if is_rollback_skipped_annotation(k) {
            continue;
        }
        if rs.metadata.annotations.get(k) != Some(v) {
            rs.metadata.annotations.insert(k, v);
            changed = true;
        }
    }
    changed
}

/// Whether the rollout is complete (Kubernetes' `DeploymentComplete`).
fn complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let want = replicas(d);
    status.updated_replicas.unwrap_or(0) == want
        && status.replicas.unwrap_or(0) == want
        && status.available_replicas.unwrap_or(0) == want
        && status.observed_generation >= d.metadata.generation
}

/// Whether `now` shows progress over `before` (Kubernetes' `DeploymentProgressing`).
fn progressing(before: &DeploymentStatus, now: &DeploymentStatus) -> bool {
    let old = |s: &DeploymentStatus| s.replicas.unwrap_or(0) - s.updated_replicas.unwrap_or(0);
    now.updated_replicas.unwrap_or(0) > before.updated_replicas.unwrap_or(0)
        || old(now) < old(before)
        || now.ready_replicas.unwrap_or(0) > before.ready_replicas.unwrap_or(0)
        || now.available_replicas.unwrap_or(0) > before.available_replicas.unwrap_or(0)
}

/// Whether no progress was seen for `deadline` seconds (Kubernetes' `DeploymentTimedOut`).
fn timed_out(conditions: &[DeploymentCondition], deadline: i32, now: Time) -> bool {
    let Some(c) = condition(conditions, PROGRESSING) else { return false };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => c
            .last_update_time
            .is_some_and(|t| t.as_millis().saturating_add(i64::from(deadline) * 1000) < now.as_millis()),
    }
}

/// The Deployment controller of one term.
#[derive(Debug, Default)]
pub struct Deployments {
    /// Each Deployment's key, by uid.
    deployment_of: BTreeMap<Uid, ObjectKey>,
    /// The Deployment that controls each set seen, by set key.
    owner_of: BTreeMap<ObjectKey, Uid>,
    /// `Recreate` Deployments waiting for their old pods to go, with their old sets' uids.
    waiting: BTreeMap<Uid, BTreeSet<Uid>>,
    /// When to look at a Deployment again (its progress deadline), by uid.
    timers: BTreeMap<Uid, i64>,
    /// The ReplicaSets without a controller, which a Deployment whose selector matches adopts.
    orphans: Orphans,
    /// Events for the owner ([`Reconciler::events`]).
    events: Vec<Record>,
    /// The `ScalingReplicaSet` events of the last round's set writes, by set key.
    scaling: BTreeMap<ObjectKey, Record>,
}

fn deployment_uid(rs: &ReplicaSet) -> Option<Uid> {
    rs.metadata.controller_ref().filter(|r| r.kind.as_str() == "Deployment").map(|r| r.uid)
}

impl Deployments {
    /// A controller with nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn observe_set(&mut self, state: &State, key: &ObjectKey, sync: &mut BTreeSet<Uid>) {
        let owner = match state.get(key) {
            Some(Object::ReplicaSet(rs)) => deployment_uid(rs),
            _ => None,
        };
        let before = match owner {
            Some(uid) => self.owner_of.insert(key.clone(), uid),
            None => self.owner_of.remove(key),
        };
        sync.extend(owner);
        sync.extend(before);
    }
}

impl Reconciler for Deployments {
    const NAME: &'static str = "deployments";

    fn reconcile(
        &mut self,
        state: &State,
        now_ms: i64,
        full: bool,
        changed: &[ObjectKey],
        outcomes: &[(Command, Fate)],
    ) -> Vec<Command> {
        let mut sync = BTreeSet::new();
        // An update of a set that failed, was not proposed or whose outcome is unknown (an
        // adoption, or the sync's own scale): its Deployment is synced again (one that did
        // apply shows in the state).
        for (command, fate) in outcomes {
            if let (
                Command::Update(Object::ReplicaSet(rs)),
                Fate::Applied(Err(_)) | Fate::NotProposed | Fate::Unknown,
            ) = (command, fate)
            {
                sync.extend(deployment_uid(rs));
            }
            // `ScalingReplicaSet` once the create or scale applied, as Kubernetes'.
            if let (Command::Create(Object::ReplicaSet(rs)) | Command::Update(Object::ReplicaSet(rs)), fate) =
                (command, fate)
            {
                let key = ObjectKey::new(Kind::ReplicaSet, rs.metadata.namespace_str(), &rs.metadata.name);
                if let (Some(record), Fate::Applied(Ok(_))) = (self.scaling.remove(&key), fate) {
                    self.events.push(record);
                }
            }
        }
        self.scaling.clear();
        if full {
            self.deployment_of.clear();
            self.owner_of.clear();
            self.orphans = Orphans::of(state, Kind::ReplicaSet);
            for obj in state.list(Kind::Deployment, None) {
                if let Some(uid) = obj.meta().uid {
                    self.deployment_of.insert(uid, obj.key());
                    sync.insert(uid);
                }
            }
            for obj in state.list(Kind::ReplicaSet, None) {
                if let Object::ReplicaSet(rs) = obj
                    && let Some(uid) = deployment_uid(rs)
                {
                    self.owner_of.insert(obj.key(), uid);
                }
            }
        } else {
            let mut pod_gone = false;
            let mut owners = BTreeSet::new();
            for key in changed {
                match key.kind {
                    Kind::Deployment => match state.get(key).and_then(|o| o.meta().uid) {
                        Some(uid) => {
                            self.deployment_of.insert(uid, key.clone());
                            sync.insert(uid);
                        }
                        None => self.deployment_of.retain(|_, k| k != key),
                    },
                    Kind::ReplicaSet => {
                        self.observe_set(state, key, &mut sync);
                        sync.extend(would_adopt(state, &mut self.orphans, key, Kind::Deployment));
                    }
                    Kind::Pod => match state.get(key) {
                        Some(Object::Pod(p)) => owners.extend(p.metadata.controller_ref().map(|r| r.uid)),
                        _ => pod_gone = true,
                    },
                    _ => {}
                }
            }
            // A waiting Deployment is looked at again when a pod of one of its old sets
            // changed, or any pod went (a pod gone no longer names its set).
            for (uid, sets) in &self.waiting {
                if pod_gone || !sets.is_disjoint(&owners) {
                    sync.insert(*uid);
                }
            }
            sync.extend(self.timers.iter().filter(|(_, at)| **at <= now_ms).map(|(uid, _)| *uid));
        }
        self.deployment_of.retain(|_, key| state.get(key).is_some());
        self.waiting.retain(|uid, _| self.deployment_of.contains_key(uid));
        self.timers.retain(|uid, _| self.deployment_of.contains_key(uid));
        let mut commands = Vec::new();
        for uid in sync {
            self.waiting.remove(&uid);
            self.timers.remove(&uid);
            let Some(key) = self.deployment_of.get(&uid) else { continue };
            let Some(Object::Deployment(d)) = state.get(key) else { continue };
            if d.metadata.uid != Some(uid) {
                continue;
            }
            // Orphaned sets matching the selector are adopted first; the Deployment is synced
            // once they are its own (their change brings it back).
            if d.metadata.deletion_timestamp.is_none() {
                let selector = Selector::from(&d.spec.selector);
                let orphans = self.orphans.matching(state, d.metadata.namespace_str(), &selector);
                if !orphans.is_empty() {
                    commands.extend(orphans.into_iter().map(|o| adopt(&d.metadata, "apps/v1", "Deployment", o)));
                    // Back in a second at the latest, whatever becomes of the adoptions (a
                    // `Recreate` wait or a deadline is taken up again by that sync).
                    self.timers.insert(uid, now_ms.saturating_add(1_000));
                    continue;
                }
            }
            let (mut more, wake, waits) = Sync::new(state, d, now_ms).run();
            let key = key.clone();
            self.announce_scaling(state, &key, &more);
            commands.append(&mut more);
            if let Some(sets) = waits {
                self.waiting.insert(uid, sets);
            }
            if let Some(at) = wake {
                self.timers.insert(uid, at.max(now_ms.saturating_add(1)));
            }
        }
        commands
    }

    fn wake_at_ms(&self) -> Option<i64> {
        self.timers.values().min().copied()
    }

    fn events(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.events)
    }
}

/// The Deployment controller's name in its events, as Kubernetes'.
pub const COMPONENT: &str = "deployment-controller";

impl Deployments {
    /// `ScalingReplicaSet` events on the Deployment at `key` for the sets a sync creates or
    /// scales (Kubernetes' "Scaled up replica set web-6b7f from 1 to 3"), kept until the
    /// write's fate is known: only one that applied is reported.
    fn announce_scaling(&mut self, state: &State, key: &ObjectKey, commands: &[Command]) {
        let Some(d) = state.get(key) else { return };
        for command in commands {
            let (rs, created) = match command {
                Command::Create(Object::ReplicaSet(rs)) => (rs, true),
                Command::Update(Object::ReplicaSet(rs)) => (rs, false),
                _ => continue,
            };
            let to = rs.spec.replicas.unwrap_or(1);
            let set = ObjectKey::new(Kind::ReplicaSet, rs.metadata.namespace_str(), &rs.metadata.name);
            let from = match state.get(&set) {
                Some(Object::ReplicaSet(live)) if !created => live.spec.replicas.unwrap_or(1),
                _ => 0,
            };
            if to == from {
                continue;
            }
            let direction = if to > from { "up" } else { "down" };
            let message = format!("Scaled {direction} replica set {} from {from} to {to}", rs.metadata.name);
            let record = Record::about(COMPONENT, d, EventType::Normal, "ScalingReplicaSet", message);
            self.scaling.insert(set, record);
        }
    }
}

#[cfg(test)]
mod tests;
