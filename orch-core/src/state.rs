//! The deterministic state machine: `apply(index, entry)` turns a committed log entry into a
//! new state, an outcome per request, and watch events.
//!
//! **Invariant:** the same entries applied in the same order give byte-identical state on
//! every replica. Nothing here reads a clock, draws a random number, does IO, or iterates a
//! hash map: time is the entry's timestamp, uids derive from the log index.
//!
//! Rules of the command set:
//! - `resourceVersion` of a changed object is the index of the entry that changed it.
//! - `generation` starts at 1 and grows by one exactly when the spec changes.
//! - A write that changes nothing is `Unchanged`: no new revision, no event.
//! - A rejected command changes nothing; a failed batch rolls back every command of it.
//! - Deletion: an object with finalizers, or a bound pod with a grace period, gets a
//!   `deletionTimestamp` and stays until its finalizers are gone and a delete with grace 0
//!   (the node agent's, once the pod stopped) arrives. Unbound and finished pods go at once.
//!   A namespace with content is marked Terminating and goes when its last object goes.
//!   A delete's `propagationPolicy` Orphan or Foreground puts its finalizer on the object
//!   (`orphan`, `foregroundDeletion`; Background removes both), which holds it until the
//!   garbage collector has orphaned or deleted its dependents ([`crate::gc`]).

use std::ops::Bound;
use std::sync::Arc;

use crate::command::{
    Action, ApplyError, Change, Command, ENTRY_REQUESTS_MAX, Entry, Outcome, Preconditions, PropagationPolicy, Success,
};
use crate::core_v1::{Namespace, NamespacePhase, PodCondition, PodPhase, PodStatus};
use crate::defaults::{DEFAULT_NAMESPACE, DEFAULT_TERMINATION_GRACE_SECONDS, apply_defaults};
use crate::fit::NodeUsage;
use crate::ids::{Revision, Uid};
use crate::index::Indexes;
use crate::meta::{ConditionStatus, ObjectMeta};
use crate::object::{Kind, Object, ObjectKey};
use crate::selector::Selector;
use crate::sessions::{Seen, Sessions};
use crate::text::Text;
use crate::time::Time;
use crate::validation::{self, FieldErrors};
use crate::watch::{EventType, WatchEvent};

/// How many names `generateName` tries before giving up.
const GENERATE_NAME_ATTEMPTS_MAX: u32 = 8;

/// The objects of the state by key: a persistent B+tree, so that a copy of the state costs a
/// few reference counts and shares every node until one side changes it.
pub(crate) type Objects = imbl::OrdMap<ObjectKey, Object>;

/// The replicated cluster state.
///
/// Cloning is cheap (the object map and the deduplication table are persistent maps whose
/// nodes a copy shares): a reader takes a copy and works on it while entries go on being
/// applied to the original, which copies only the nodes it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub(crate) objects: Objects,
    pub(crate) applied: Revision,
    pub(crate) clock_ms: i64,
    pub(crate) bootstrapped: bool,
    pub(crate) sessions: Sessions,
    /// Indexes apply maintains with every write, derived from the objects (not in snapshots,
    /// rebuilt when one is read; `check_invariants` recomputes them).
    pub(crate) indexes: Indexes,
}

/// What applying one entry produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutput {
    /// One outcome per request, in order.
    pub outcomes: Vec<Outcome>,
    /// The changes, in order; all carry the entry's index as revision.
    pub events: Vec<WatchEvent>,
}

/// The per-entry context.
struct Txn {
    index: u64,
    /// The rules version the entry is applied under ([`crate::rules`]).
    rules: u16,
    now: Time,
    uid_seq: u32,
    events: Vec<WatchEvent>,
    /// Previous values of the keys the current request wrote, to roll back a failure.
    undo: Vec<(ObjectKey, Option<Object>)>,
}

impl Txn {
    fn revision(&self) -> Revision {
        Revision(self.index)
    }
}

fn conflict(key: &ObjectKey, reason: impl Into<String>) -> ApplyError {
    ApplyError::Conflict { key: key.clone(), reason: reason.into() }
}

fn forbidden(key: &ObjectKey, reason: impl Into<String>) -> ApplyError {
    ApplyError::Forbidden { key: key.clone(), reason: reason.into() }
}

fn invalid(obj: &Object, errors: FieldErrors) -> ApplyError {
    ApplyError::Invalid { kind: obj.kind(), name: obj.meta().name.to_string(), errors }
}

fn check_preconditions(key: &ObjectKey, meta: &ObjectMeta, pre: &Preconditions) -> Result<(), ApplyError> {
    if let Some(uid) = pre.uid
        && meta.uid != Some(uid)
    {
        let have = meta.uid.map(|u| u.to_string()).unwrap_or_default();
        return Err(conflict(
            key,
            format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"),
        ));
    }
    if let Some(rv) = pre.resource_version
        && meta.resource_version != Some(rv)
    {
        return Err(conflict(
            key,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    Ok(())
}

/// Characters of generated name suffixes, as Kubernetes (no vowels, no confusable digits).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A 5-character suffix derived from (index, seq, attempt): deterministic, well spread.
fn generated_suffix(index: u64, seq: u32, attempt: u32) -> String {
    // splitmix64 of the inputs.
    let mut x = index ^ (u64::from(seq) << 40) ^ (u64::from(attempt) << 56);
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let base = SUFFIX_ALPHABET.len() as u64;
    (0..5).map(|i| SUFFIX_ALPHABET[((x / base.pow(i)) % base) as usize] as char).collect()
}

impl State {
    /// An empty state; the `default` namespace is created by the first entry applied.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of the last entry applied (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.applied.0
    }

    /// The state machine's clock: the largest entry timestamp applied so far.
    pub fn clock(&self) -> Time {
        Time::from_millis(self.clock_ms)
    }

    /// The object with this key.
    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key)
    }

    /// The objects of `kind`, in key order; in one namespace when `namespace` is given.
    pub fn list<'a>(&'a self, kind: Kind, namespace: Option<&str>) -> impl Iterator<Item = &'a Object> + 'a {
        let ns = namespace.filter(|_| kind.namespaced()).map(str::to_owned);
        let start = ObjectKey { kind, namespace: ns.as_deref().unwrap_or_default().into(), name: Text::new() };
        self.objects
            .range((Bound::Included(start), Bound::Unbounded))
            .take_while(move |(k, _)| k.kind == kind && ns.as_ref().is_none_or(|n| &k.namespace == n))
            .map(|(_, o)| o)
    }

    /// The objects of `kind` whose labels match `selector`.
    pub fn select<'a>(
        &'a self,
        kind: Kind,
        namespace: Option<&str>,
        selector: &'a Selector,
    ) -> impl Iterator<Item = &'a Object> + 'a {
        self.list(kind, namespace).filter(move |o| selector.matches(&o.meta().labels))
    }

    /// The number of objects of all kinds.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when no object is stored.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The deduplication table.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Applies the entry at log `index`.
    ///
    /// # Panics
    /// If `index` is not greater than the last applied index: the log layer must apply
    /// entries once each, in order. Or if the entry's rules version is not one this build
    /// applies ([`crate::rules`]): [`crate::codec::decode_entry`] refuses such an entry, so
    /// one reaches `apply` only from a caller that built it by hand, and applying it under
    /// other rules would make this replica diverge. Both are broken invariants, not bad input.
    pub fn apply(&mut self, index: u64, entry: Entry) -> ApplyOutput {
        assert!(
            index > self.applied.0,
            "entry {index} applied after entry {}: entries must be applied in log order",
            self.applied.0
        );
        assert!(
            crate::rules::known(entry.rules),
            "entry {index} is of rules version {}, and this build applies {} to {}",
            entry.rules,
            crate::rules::RULES_VERSION_MIN,
            crate::rules::RULES_VERSION
        );
        let rules = entry.rules;
        self.applied = Revision(index);
        self.clock_ms = self.clock_ms.max(entry.timestamp_ms);
        let mut txn = Txn {
            index,
            rules,
            now: Time::from_millis(self.clock_ms),
            uid_seq: 0,
            events: Vec::new(),
            undo: Vec::new(),
        };
        if !self.bootstrapped {
            self.bootstrap(&mut txn);
        }
        let mut outcomes = Vec::with_capacity(entry.requests.len());
        for (i, request) in entry.requests.into_iter().enumerate() {
            let outcome = if i >= ENTRY_REQUESTS_MAX {
                Err(ApplyError::BadRequest {
                    reason: format!("an entry may carry at most {ENTRY_REQUESTS_MAX} requests"),
                })
            } else {
                let (client, serial, acked_below) = (request.client, request.serial, request.acked_below);
                let expired = || Err(ApplyError::SessionExpired { client, serial });
                match self.sessions.lookup(client, serial, request.retry, rules) {
                    Seen::Applied(first) => first,
                    Seen::Stale => Err(ApplyError::StaleRequest { client, serial }),
                    // Rules 1: refused unapplied and unrecorded, as a stale request is.
                    Seen::Expired if rules < 2 => expired(),
                    seen @ (Seen::Expired | Seen::New) => match Sessions::refuse(serial, acked_below) {
                        // Refused unapplied and unrecorded: the same answer to a retry.
                        Some(reason) => Err(ApplyError::BadRequest { reason }),
                        None => {
                            // Rules 2 records "expired" as the serial's outcome, so that an
                            // earlier attempt still on its way is not applied after the client
                            // was told the outcome is unknown.
                            let outcome = if matches!(seen, Seen::Expired) {
                                expired()
                            } else {
                                self.run(&mut txn, request.command)
                            };
                            self.sessions.record((client, serial, acked_below), &outcome, self.clock_ms, rules);
                            outcome
                        }
                    },
                }
            };
            outcomes.push(outcome);
        }
        self.sessions.expire(self.clock_ms);
        ApplyOutput { outcomes, events: txn.events }
    }

    fn bootstrap(&mut self, txn: &mut Txn) {
        self.bootstrapped = true;
        let mut ns = Namespace::default();
        ns.metadata.name = DEFAULT_NAMESPACE.into();
        let mut changes = Vec::new();
        if let Err(e) = self.create(txn, Object::from(ns), &mut changes) {
            unreachable!("creating the default namespace in an empty state failed: {e}");
        }
        txn.undo.clear();
    }

    /// Runs one request's command atomically.
    fn run(&mut self, txn: &mut Txn, command: Command) -> Outcome {
        txn.undo.clear();
        let events_mark = txn.events.len();
        let mut changes = Vec::new();
        match self.exec(txn, command, &mut changes, false) {
            Ok(()) => Ok(Success { revision: txn.revision(), changes }),
            Err(e) => {
                while let Some((key, prev)) = txn.undo.pop() {
                    self.indexes.update(&key, self.objects.get(&key), prev.as_ref());
                    match prev {
                        Some(obj) => self.objects.insert(key, obj),
                        None => self.objects.remove(&key),
                    };
                }
                txn.events.truncate(events_mark);
                Err(e)
            }
        }
    }

    fn exec(
        &mut self,
        txn: &mut Txn,
        command: Command,
        changes: &mut Vec<Change>,
        in_batch: bool,
    ) -> Result<(), ApplyError> {
        match command {
            Command::Create(obj) => self.create(txn, obj, changes),
            Command::Update(obj) => self.update(txn, obj, changes),
            Command::Apply(obj) if txn.rules >= 6 => {
                // As a manifest: the object as its manifest (what it leaves at the default is
                // absent from it), merged as `orchctl apply`'s.
                let (modified, obj) = crate::merge::modified(obj.to_manifest())?;
                self.apply_manifest(txn, &modified, obj, changes)
            }
            Command::Apply(mut obj) => {
                let omits_replicas = match &obj {
                    Object::Deployment(d) => d.spec.replicas.is_none(),
                    Object::ReplicaSet(rs) => rs.spec.replicas.is_none(),
                    _ => false,
                };
                // Defaults first: they name the namespace the object goes to.
                apply_defaults(&mut obj);
                let live = if obj.meta().name.is_empty() { None } else { self.objects.get(&obj.key()) };
                match live {
                    Some(live) => {
                        if txn.rules >= 4 {
                            keep_controller_fields(&mut obj, live, omits_replicas);
                        }
                        self.update(txn, obj, changes)
                    }
                    None => self.create(txn, obj, changes),
                }
            }
            Command::ApplyManifest(_) if txn.rules < 6 => Err(ApplyError::BadRequest {
                // No build of an earlier rules version wrote one.
                reason: format!("an apply of a manifest is applied under rules version 6 on, not {}", txn.rules),
            }),
            Command::ApplyManifest(text) => {
                let (modified, obj) = crate::merge::submitted(&text)?;
                self.apply_manifest(txn, &modified, obj, changes)
            }
            Command::UpdateStatus(obj) => self.update_status(txn, obj, changes),
            Command::Delete { key, grace_period_seconds, preconditions, propagation_policy } => {
                self.delete(txn, &key, grace_period_seconds, &preconditions, propagation_policy, changes)
            }
            Command::Bind { namespace, name, node, preconditions } => {
                self.bind(txn, &namespace, &name, &node, &preconditions, changes)
            }
            Command::Scale { key, replicas } => self.scale(txn, &key, replicas, changes),
            Command::RolloutUndo { namespace, name, to_revision } => {
                self.rollout_undo(txn, &namespace, &name, to_revision, changes)
            }
            Command::Batch(commands) => {
                crate::command::check_batch_shape(commands.len(), in_batch)?;
                for (i, c) in commands.into_iter().enumerate() {
                    self.exec(txn, c, changes, true).map_err(|e| crate::command::batch_error(i, e))?;
                }
                Ok(())
            }
        }
    }

    /// Rules 6: applies a manifest (`modified`, from [`crate::merge::submitted`], describing
    /// `obj`): creates `obj` when nothing of its key is live, else updates the live object
    /// with the three-way merge of the manifest applied last, `modified` and itself.
    fn apply_manifest(
        &mut self,
        txn: &mut Txn,
        modified: &serde_json::Value,
        mut obj: Object,
        changes: &mut Vec<Change>,
    ) -> Result<(), ApplyError> {
        apply_defaults(&mut obj);
        let live = if obj.meta().name.is_empty() { None } else { self.objects.get(&obj.key()) };
        match live {
            Some(live) => {
                let merged = crate::merge::merged(live, modified)?;
                self.update(txn, merged, changes)
            }
            None => self.create(txn, obj, changes),
        }
    }

    // -- writes ---------------------------------------------------------------------------

    fn put(&mut self, txn: &mut Txn, key: ObjectKey, obj: Object) {
        self.indexes.update(&key, self.objects.get(&key), Some(&obj));
        let prev = self.objects.insert(key.clone(), obj);
        txn.undo.push((key, prev));
    }

    /// Stores `new` in place of `old` (None for a create): sets revision and generation,
    /// emits the event, records the change. Returns the action.
    fn write(&mut self, txn: &mut Txn, old: Option<&Object>, mut new: Object, changes: &mut Vec<Change>) -> Action {
        let key = new.key();
        if old == Some(&new) {
            changes.push(Change {
                key,
                uid: new.meta().uid.unwrap_or_default(),
                revision: new.meta().revision(),
                action: Action::Unchanged,
            });
            return Action::Unchanged;
        }
        let generation = match old {
            None => 1,
            Some(o) => o.meta().generation.unwrap_or(1) + i64::from(!o.same_spec(&new)),
        };
        let meta = new.meta_mut();
        meta.generation = Some(generation);
        meta.resource_version = Some(txn.revision());
        let uid = meta.uid.unwrap_or_default();
        let (event_type, action) =
            if old.is_some() { (EventType::Modified, Action::Updated) } else { (EventType::Added, Action::Created) };
        txn.events.push(WatchEvent { revision: txn.revision(), event_type, object: new.clone(), prev: old.cloned() });
        changes.push(Change { key: key.clone(), uid, revision: txn.revision(), action });
        self.put(txn, key, new);
        action
    }

    /// Removes an object for good and emits `Deleted` with its last state.
    fn remove(&mut self, txn: &mut Txn, key: &ObjectKey, changes: &mut Vec<Change>) {
        let Some(mut obj) = self.objects.remove(key) else { return };
        self.indexes.update(key, Some(&obj), None);
        txn.undo.push((key.clone(), Some(obj.clone())));
        obj.meta_mut().resource_version = Some(txn.revision());
        let uid = obj.meta().uid.unwrap_or_default();
        txn.events.push(WatchEvent {
            revision: txn.revision(),
            event_type: EventType::Deleted,
            object: obj,
            prev: None,
        });
        changes.push(Change { key: key.clone(), uid, revision: txn.revision(), action: Action::Deleted });
        if key.kind.namespaced() {
            self.finish_namespace_if_done(txn, &key.namespace, changes);
        }
    }

    fn namespace_is_empty(&self, namespace: &str) -> bool {
        Kind::ALL.iter().filter(|k| k.namespaced()).all(|&kind| self.list(kind, Some(namespace)).next().is_none())
    }

    /// Removes a terminating namespace once it is empty and has no finalizers.
    fn finish_namespace_if_done(&mut self, txn: &mut Txn, namespace: &str, changes: &mut Vec<Change>) {
        let key = ObjectKey::new(Kind::Namespace, "", namespace);
        let done = self.objects.get(&key).is_some_and(|ns| {
            let m = ns.meta();
            m.deletion_timestamp.is_some() && m.finalizers.is_empty()
        });
        if done && self.namespace_is_empty(namespace) {
            self.remove(txn, &key, changes);
        }
    }

    fn check_namespace_open(&self, kind: Kind, namespace: &str) -> Result<(), ApplyError> {
        if !kind.namespaced() {
            return Ok(());
        }
        let key = ObjectKey::new(Kind::Namespace, "", namespace);
        match self.objects.get(&key) {
            None => Err(ApplyError::NotFound { key }),
            Some(ns) if ns.meta().deletion_timestamp.is_some() => Err(forbidden(
                &key,
                format!("unable to create new content in namespace {namespace} because it is being terminated"),
            )),
            Some(_) => Ok(()),
        }
    }

    fn create(&mut self, txn: &mut Txn, mut obj: Object, changes: &mut Vec<Change>) -> Result<(), ApplyError> {
        apply_defaults(&mut obj);
        if txn.rules >= 5
            && let Object::Pod(pod) = &mut obj
        {
            crate::defaults::default_tolerations(&mut Arc::make_mut(pod).spec);
        }
        let seq = txn.uid_seq;
        txn.uid_seq += 1;
        let now = txn.now;
        {
            let meta = obj.meta_mut();
            meta.uid = Some(Uid::derive(txn.index, seq));
            meta.resource_version = None;
            meta.generation = None;
            meta.creation_timestamp = Some(now);
            meta.deletion_timestamp = None;
            meta.deletion_grace_period_seconds = None;
        }
        set_initial_status(&mut obj, now);
        let mut errors = validation::validate_under(&obj, txn.rules);
        if let Object::Node(node) = &obj {
            // A node registers with the status its agent reports.
            errors.0.extend(validation::validate_status(&obj).0);
            if txn.rules >= 7 {
                errors.0.extend(validation::validate_pod_cidr(node, None).0);
            }
        }
        if !errors.is_empty() {
            return Err(invalid(&obj, errors));
        }
        let kind = obj.kind();
        let namespace = obj.meta().namespace_str().to_owned();
        self.check_namespace_open(kind, &namespace)?;
        if obj.meta().name.is_empty() {
            let prefix = obj.meta().generate_name.clone().unwrap_or_default();
            let name = (0..GENERATE_NAME_ATTEMPTS_MAX)
                .map(|attempt| format!("{prefix}{}", generated_suffix(txn.index, seq, attempt)))
                .find(|name| !self.objects.contains_key(&ObjectKey::new(kind, &namespace, name)));
            match name {
                Some(name) => obj.meta_mut().name = name.into(),
                None => {
                    return Err(ApplyError::AlreadyExists {
                        key: ObjectKey::new(kind, &namespace, &format!("{prefix}*")),
                    });
                }
            }
        }
        let key = obj.key();
        if self.objects.contains_key(&key) {
            return Err(ApplyError::AlreadyExists { key });
        }
        self.write(txn, None, obj, changes);
        Ok(())
    }

    fn lookup(&self, key: &ObjectKey) -> Result<Object, ApplyError> {
        self.objects.get(key).cloned().ok_or_else(|| ApplyError::NotFound { key: key.clone() })
    }

    fn update(&mut self, txn: &mut Txn, mut new: Object, changes: &mut Vec<Change>) -> Result<(), ApplyError> {
        apply_defaults(&mut new);
        let stored = self.objects.get(&new.key()).cloned();
        if txn.rules >= 5
            && let Object::Pod(pod) = &mut new
        {
            // As Kubernetes' admission, on update too: a manifest applied again, which does
            // not name the defaults, is not taken for removing them.
            let spec = &mut Arc::make_mut(pod).spec;
            crate::defaults::default_tolerations(spec);
            // Tolerations may only be added, in any order (Kubernetes compares them as a set):
            // the stored ones first, in their order, then the new ones.
            if let Some(Object::Pod(old)) = &stored {
                order_like(&mut spec.tolerations, &old.spec.tolerations);
            }
        }
        let key = new.key();
        let old = self.lookup(&key)?;
        let pre = Preconditions { uid: new.meta().uid, resource_version: new.meta().resource_version };
        check_preconditions(&key, old.meta(), &pre)?;
        let old_meta = old.meta();
        if old_meta.deletion_timestamp.is_some()
            && new.meta().finalizers.iter().any(|f| !old_meta.finalizers.contains(f))
        {
            return Err(forbidden(&key, "no new finalizers can be added if the object is being deleted"));
        }
        // Fields the user does not own come from the stored object.
        {
            let meta = new.meta_mut();
            meta.uid = old_meta.uid;
            meta.generate_name.clone_from(&old_meta.generate_name);
            meta.resource_version = old_meta.resource_version;
            meta.generation = old_meta.generation;
            meta.creation_timestamp = old_meta.creation_timestamp;
            meta.deletion_timestamp = old_meta.deletion_timestamp;
            meta.deletion_grace_period_seconds = old_meta.deletion_grace_period_seconds;
        }
        new.copy_status_from(&old);
        match (&mut new, &old) {
            // A re-applied manifest leaves out what the system filled in.
            (Object::Pod(n), Object::Pod(o)) if n.spec.node_name.is_none() => {
                Arc::make_mut(n).spec.node_name.clone_from(&o.spec.node_name);
            }
            (Object::Service(n), Object::Service(o)) if n.spec.cluster_ip.as_deref().unwrap_or("").is_empty() => {
                Arc::make_mut(n).spec.cluster_ip.clone_from(&o.spec.cluster_ip);
            }
            _ => {}
        }
        let mut errors = validation::validate_update_under(&new, &old, txn.rules);
        if txn.rules >= 7
            && let (Object::Node(n), Object::Node(o)) = (&new, &old)
        {
            errors.0.extend(validation::validate_pod_cidr(n, Some(o)).0);
        }
        if !errors.is_empty() {
            return Err(invalid(&new, errors));
        }
        self.write(txn, Some(&old), new, changes);
        self.finish_deletion_if_done(txn, &key, changes);
        Ok(())
    }

    fn update_status(&mut self, txn: &mut Txn, new: Object, changes: &mut Vec<Change>) -> Result<(), ApplyError> {
        let key = new.key();
        let old = self.lookup(&key)?;
        let pre = Preconditions { uid: new.meta().uid, resource_version: new.meta().resource_version };
        check_preconditions(&key, old.meta(), &pre)?;
        let mut merged = old.clone();
        merged.copy_status_from(&new);
        let errors = validation::validate_status_update(&merged, &old);
        if !errors.is_empty() {
            return Err(invalid(&merged, errors));
        }
        self.write(txn, Some(&old), merged, changes);
        Ok(())
    }

    /// Removes an object whose deletion has started, once nothing holds it any more.
    fn finish_deletion_if_done(&mut self, txn: &mut Txn, key: &ObjectKey, changes: &mut Vec<Change>) {
        let Some(obj) = self.objects.get(key) else { return };
        let meta = obj.meta();
        if meta.deletion_timestamp.is_none() || !meta.finalizers.is_empty() {
            return;
        }
        if key.kind == Kind::Namespace {
            self.finish_namespace_if_done(txn, &key.name, changes);
        } else if meta.deletion_grace_period_seconds.unwrap_or(0) == 0 {
            self.remove(txn, key, changes);
        }
    }

    fn delete(
        &mut self,
        txn: &mut Txn,
        key: &ObjectKey,
        grace_period_seconds: Option<i64>,
        preconditions: &Preconditions,
        policy: Option<PropagationPolicy>,
        changes: &mut Vec<Change>,
    ) -> Result<(), ApplyError> {
        if let Some(g) = grace_period_seconds
            && g < 0
        {
            return Err(ApplyError::BadRequest {
                reason: format!("gracePeriodSeconds: Invalid value: {g}: must be greater than or equal to 0"),
            });
        }
        let old = self.lookup(key)?;
        check_preconditions(key, old.meta(), preconditions)?;
        if key.kind == Kind::Namespace && key.name == DEFAULT_NAMESPACE {
            return Err(forbidden(key, "this namespace may not be deleted"));
        }
        let grace = match &old {
            Object::Pod(p) => {
                let finished = matches!(p.status.phase, Some(PodPhase::Succeeded | PodPhase::Failed));
                if p.spec.node_name.is_none() || finished {
                    0
                } else {
                    grace_period_seconds
                        .or(p.spec.termination_grace_period_seconds)
                        .unwrap_or(DEFAULT_TERMINATION_GRACE_SECONDS)
                }
            }
            _ => 0,
        };
        let meta = old.meta();
        // A pending deletion can only be shortened.
        let pending = meta.deletion_grace_period_seconds;
        let grace = pending.map_or(grace, |g| g.min(grace));
        // The policy's finalizer, which the garbage collector removes once it has orphaned or
        // deleted the dependents (format 10; no earlier entry carries a policy). As in
        // Kubernetes, a pod whose graceful deletion is pending keeps its finalizers unless
        // the delete shortens the grace period.
        let graceful_pending =
            key.kind == Kind::Pod && meta.deletion_timestamp.is_some() && pending.is_none_or(|g| grace >= g);
        let finalizers = if graceful_pending {
            meta.finalizers.clone()
        } else {
            PropagationPolicy::finalizers(policy, &meta.finalizers)
        };
        if finalizers.len() > validation::FINALIZERS_MAX {
            let mut errors = FieldErrors::default();
            errors.too_many("metadata.finalizers", finalizers.len(), validation::FINALIZERS_MAX);
            return Err(invalid(&old, errors));
        }
        let removable = finalizers.is_empty()
            && if key.kind == Kind::Namespace { self.namespace_is_empty(&key.name) } else { grace == 0 };
        if removable {
            self.remove(txn, key, changes);
            return Ok(());
        }
        let mut new = old.clone();
        {
            let deadline = txn.now.plus_seconds(grace);
            let m = new.meta_mut();
            m.finalizers = finalizers;
            if m.deletion_timestamp.is_none_or(|t| deadline < t) {
                m.deletion_timestamp = Some(deadline);
            }
            m.deletion_grace_period_seconds = Some(grace);
        }
        if let Object::Namespace(ns) = &mut new {
            Arc::make_mut(ns).status.phase = Some(NamespacePhase::Terminating);
        }
        if self.write(txn, Some(&old), new, changes) == Action::Updated
            && let Some(last) = changes.last_mut()
        {
            last.action = Action::Deleting;
        }
        Ok(())
    }

    fn scale(
        &mut self,
        txn: &mut Txn,
        key: &ObjectKey,
        replicas: i32,
        changes: &mut Vec<Change>,
    ) -> Result<(), ApplyError> {
        crate::command::check_scale(key, replicas)?;
        let mut obj = self.lookup(key)?;
        match &mut obj {
            Object::Deployment(d) => Arc::make_mut(d).spec.replicas = Some(replicas),
            Object::ReplicaSet(rs) => Arc::make_mut(rs).spec.replicas = Some(replicas),
            _ => unreachable!("check_scale allows deployments and replica sets only"),
        }
        // The stored object with one field changed: its own resourceVersion is the precondition.
        self.update(txn, obj, changes)
    }

    fn rollout_undo(
        &mut self,
        txn: &mut Txn,
        namespace: &str,
        name: &str,
        to_revision: i64,
        changes: &mut Vec<Change>,
    ) -> Result<(), ApplyError> {
        crate::command::check_rollout_undo(to_revision)?;
        let key = ObjectKey::new(Kind::Deployment, namespace, name);
        let Object::Deployment(d) = self.lookup(&key)? else { unreachable!("a deployment key holds a deployment") };
        if txn.rules >= 4 && d.spec.paused == Some(true) {
            // As kubectl.
            return Err(ApplyError::BadRequest {
                reason: "you cannot rollback a paused deployment; resume it first with 'orchctl rollout resume                          deployment/NAME' and try again"
                    .replace("NAME", name),
            });
        }
        // The deployment controller's choice of template: the same code decides it everywhere.
        let template = crate::deployment::rollback_template(self, &d, to_revision)
            .map_err(|reason| ApplyError::BadRequest { reason })?;
        let mut d = (*d).clone();
        if txn.rules >= 4 {
            // kubectl's undo: the revision's annotations come back with its template (but the
            // controller's own and kubectl's last-applied one, which stay as they are).
            let target =
                crate::deployment::rollback_set(self, &d, to_revision).map(|rs| rs.metadata.annotations.clone());
            if let Some(annotations) = target {
                let skip = crate::deployment::is_rollback_skipped_annotation;
                let mut kept: crate::StrMap = d
                    .metadata
                    .annotations
                    .iter()
                    .filter(|(k, _)| skip(k))
                    .map(|(k, v)| (Text::from(k), Text::from(v)))
                    .collect();
                for (k, v) in annotations.iter().filter(|(k, _)| !skip(k)) {
                    kept.insert(k, v);
                }
                d.metadata.annotations = kept;
            }
        }
        d.spec.template = template;
        self.update(txn, Object::from(d), changes)
    }

    /// The ReplicaSets a Deployment controls (by controller reference to its uid), oldest
    /// revision first; ties in name order.
    pub fn owned_replica_sets(&self, d: &crate::Deployment) -> Vec<Arc<crate::ReplicaSet>> {
        let mut sets = crate::deployment::controlled_sets(self, d);
        sets.sort_by(|a, b| {
            (a.revision().unwrap_or(0), &a.metadata.name).cmp(&(b.revision().unwrap_or(0), &b.metadata.name))
        });
        sets
    }

    fn bind(
        &mut self,
        txn: &mut Txn,
        namespace: &str,
        name: &str,
        node: &str,
        preconditions: &Preconditions,
        changes: &mut Vec<Change>,
    ) -> Result<(), ApplyError> {
        let key = ObjectKey::new(Kind::Pod, namespace, name);
        let old = self.lookup(&key)?;
        check_preconditions(&key, old.meta(), preconditions)?;
        let Object::Pod(pod) = &old else { unreachable!("a pod key holds a pod") };
        if old.meta().deletion_timestamp.is_some() {
            return Err(forbidden(&key, "the pod is being deleted"));
        }
        match pod.spec.node_name.as_deref() {
            Some(bound) if bound == node => {
                self.write(txn, Some(&old), old.clone(), changes);
                return Ok(());
            }
            Some(bound) => {
                let bound = crate::validation::q(bound);
                return Err(conflict(&key, format!("pod {name} is already assigned to node {bound}")));
            }
            None => {}
        }
        let node_key = ObjectKey::new(Kind::Node, "", node);
        let node_obj = match self.objects.get(&node_key) {
            None => return Err(ApplyError::NotFound { key: node_key }),
            Some(n) if n.meta().deletion_timestamp.is_some() => {
                return Err(forbidden(&node_key, "the node is being deleted"));
            }
            Some(Object::Node(n)) => n,
            Some(_) => unreachable!("a node key holds a node"),
        };
        // Rules 3: the scheduler's decision is checked again against the node as it is now
        // (the same filters, and what the pods bound to it take by the index), so a decision
        // made on a stale view is refused instead of over-committing the node.
        if txn.rules >= 3 {
            let empty = NodeUsage::default();
            let usage = self.indexes.node_usage(node).unwrap_or(&empty);
            let request = crate::fit::Requests::of(pod);
            let allocatable = crate::fit::Requests::allocatable(node_obj);
            if let Err(reasons) = crate::fit::fits(pod, request, node_obj, allocatable, usage) {
                let reasons: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                let node = crate::validation::q(node);
                return Err(conflict(&key, format!("pod {name} does not fit node {node}: {}", reasons.join(", "))));
            }
        }
        let mut new = old.clone();
        if let Object::Pod(p) = &mut new {
            let p = Arc::make_mut(p);
            p.spec.node_name = Some(node.into());
            p.status.conditions.retain(|c| c.type_ != "PodScheduled");
            p.status.conditions.push(scheduled_condition(txn.now));
        }
        self.write(txn, Some(&old), new, changes);
        Ok(())
    }

    /// Checks the invariants that tie the state together. Used by tests and after restoring a
    /// snapshot; returns the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_invariants_but_indexes()?;
        self.indexes.check(&self.objects)
    }

    /// [`State::check_invariants`] but the indexes: for a state whose indexes were just built
    /// from its objects (a snapshot read), where recomputing them would only repeat the work.
    pub(crate) fn check_invariants_but_indexes(&self) -> Result<(), String> {
        // The first entry applied creates `default`: a state that says it was never
        // bootstrapped but holds objects would run that create again, which cannot succeed.
        if !self.bootstrapped && (!self.objects.is_empty() || self.applied.0 > 0) {
            return Err(format!(
                "not bootstrapped, yet it holds {} objects at revision {}",
                self.objects.len(),
                self.applied
            ));
        }
        let mut uids = Vec::with_capacity(self.objects.len());
        let mut namespace_seen: Option<&str> = None;
        for (key, obj) in &self.objects {
            let meta = obj.meta();
            if obj.kind() != key.kind || meta.name != key.name || meta.namespace_str() != key.namespace {
                return Err(format!("object stored under {key:?} has key {:?}", obj.key()));
            }
            let rv = meta.revision();
            if rv.0 == 0 || rv > self.applied {
                return Err(format!("{key}: resourceVersion {rv} outside 1..={}", self.applied));
            }
            if meta.generation.is_none_or(|g| g < 1) {
                return Err(format!("{key}: generation {:?} is not positive", meta.generation));
            }
            match meta.uid {
                Some(uid) => uids.push(uid),
                None => return Err(format!("{key}: uid missing")),
            }
            // Objects are sorted by (kind, namespace): check each namespace once per run.
            if key.kind.namespaced() && namespace_seen != Some(key.namespace.as_str()) {
                let ns = ObjectKey::new(Kind::Namespace, "", &key.namespace);
                if !self.objects.contains_key(&ns) {
                    return Err(format!("{key}: namespace {:?} does not exist", key.namespace));
                }
                namespace_seen = Some(key.namespace.as_str());
            }
        }
        uids.sort_unstable();
        if let Some(pair) = uids.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("uid {} is shared by two objects", pair[0]));
        }
        self.sessions.check_invariants().map_err(str::to_owned)
    }

    /// What the pods bound to node `name` take of it (None: no pod occupies it), from the
    /// index apply maintains.
    pub fn node_usage(&self, name: &str) -> Option<&NodeUsage> {
        self.indexes.node_usage(name)
    }

    /// The keys of the objects that name `owner` among their owner references, in key order,
    /// from the index apply maintains.
    pub fn owned_by(&self, owner: Uid) -> impl Iterator<Item = &ObjectKey> + '_ {
        self.indexes.owned_by(owner)
    }
}

/// Rules 4: what an `Apply` over a live Deployment or ReplicaSet keeps of it that the
/// submitted one does not name: the deployment controller's annotations (`deployment.kubernetes.io/...`) and, when the
/// manifest leaves `spec.replicas` out, a Deployment's or ReplicaSet's replicas (as scaled).
/// Rules 4 and 5 only: from rules 6 on, apply merges ([`crate::merge`]).
fn keep_controller_fields(obj: &mut Object, live: &Object, omits_replicas: bool) {
    if !matches!(obj, Object::Deployment(_) | Object::ReplicaSet(_)) {
        return;
    }
    let annotations: Vec<(Text, Text)> = live
        .meta()
        .annotations
        .iter()
        .filter(|(k, _)| k.starts_with(crate::deployment::ANNOTATION_PREFIX) && !obj.meta().annotations.contains_key(k))
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    for (k, v) in annotations {
        obj.meta_mut().annotations.insert(k, v);
    }
    if omits_replicas {
        match (obj, live) {
            (Object::Deployment(d), Object::Deployment(l)) => Arc::make_mut(d).spec.replicas = l.spec.replicas,
            (Object::ReplicaSet(rs), Object::ReplicaSet(l)) => Arc::make_mut(rs).spec.replicas = l.spec.replicas,
            _ => {}
        }
    }
}

/// Puts the tolerations of `old` first in `new`, in their order, when `new` holds each of
/// them (as many times), the others after them in their order; else leaves `new` as it is.
fn order_like(new: &mut Vec<crate::core_v1::Toleration>, old: &[crate::core_v1::Toleration]) {
    let mut rest = new.clone();
    let mut ordered = Vec::with_capacity(new.len());
    for t in old {
        let Some(i) = rest.iter().position(|r| r == t) else { return };
        ordered.push(rest.remove(i));
    }
    ordered.extend(rest);
    *new = ordered;
}

/// The status a new object starts with: what a create keeps of the status it was given.
pub(crate) fn set_initial_status(obj: &mut Object, now: Time) {
    match obj {
        Object::Pod(p) => {
            let pod = Arc::make_mut(p);
            pod.status = PodStatus { phase: Some(PodPhase::Pending), ..PodStatus::default() };
            if pod.spec.node_name.is_some() {
                pod.status.conditions.push(scheduled_condition(now));
            }
        }
        Object::Deployment(d) => Arc::make_mut(d).status = Default::default(),
        Object::ReplicaSet(rs) => Arc::make_mut(rs).status = Default::default(),
        Object::Namespace(ns) => Arc::make_mut(ns).status.phase = Some(NamespacePhase::Active),
        Object::Node(_)
        | Object::Service(_)
        | Object::Endpoints(_)
        | Object::Event(_)
        | Object::ConfigMap(_)
        | Object::Secret(_) => {}
    }
}

fn scheduled_condition(now: Time) -> PodCondition {
    PodCondition::new("PodScheduled", ConditionStatus::True, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Request;
    use crate::ids::ClientId;

    fn create_namespace(state: &mut State, name: &str) {
        let ns =
            crate::manifest::parse_manifests(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}"))
                .expect("valid")
                .remove(0);
        let serial = state.applied_index() + 1;
        let request =
            Request { client: ClientId(1), serial, acked_below: 0, retry: false, command: Command::Create(ns) };
        let out = state.apply(serial, Entry::new(1_000, vec![request]));
        assert!(out.outcomes.iter().all(Result::is_ok), "{:?}", out.outcomes);
    }

    fn apply_one(state: &mut State, command: Command) -> Outcome {
        let serial = state.applied_index() + 1;
        let request = Request { client: ClientId(1), serial, acked_below: 0, retry: false, command };
        let mut out = state.apply(serial, Entry::new(1_000, vec![request]));
        state.check_invariants().expect("the index agrees with the pods after every entry");
        out.outcomes.remove(0)
    }

    fn delete_pod(name: &str, grace: i64) -> Command {
        Command::Delete {
            key: ObjectKey::new(Kind::Pod, "default", name),
            grace_period_seconds: Some(grace),
            preconditions: Preconditions::default(),
            propagation_policy: None,
        }
    }

    fn bind(name: &str) -> Command {
        Command::Bind {
            namespace: "default".into(),
            name: name.into(),
            node: "n1".into(),
            preconditions: Preconditions::default(),
        }
    }

    /// Every write keeps the index of what bound pods take of each node: a bind adds, a
    /// request rolled back takes nothing, a pod that finished or was deleted frees its share
    /// (and `check_invariants`, after each entry, recomputes the index from the pods).
    #[test]
    fn apply_keeps_the_index_of_what_pods_take_of_each_node() {
        let mut state = State::new();
        let manifests = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {conditions: [{type: Ready, status: 'True'}], capacity: {cpu: '4', pods: '10'}}\n---\n\
                         apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: x, \
                         resources: {requests: {cpu: 250m}}, ports: [{containerPort: 80, hostPort: 8080}]}]}\n---\n\
                         apiVersion: v1\nkind: Pod\nmetadata: {name: q}\nspec: {containers: [{name: c, image: x}]}";
        let objects = crate::manifest::parse_manifests(manifests).expect("valid");
        for obj in objects.clone() {
            assert!(apply_one(&mut state, Command::Create(obj)).is_ok());
        }
        assert_eq!(state.node_usage("n1"), None, "nothing bound yet");
        assert!(apply_one(&mut state, bind("p")).is_ok());
        let usage =
            |state: &State| state.node_usage("n1").map(|u| (u.requested.cpu, u.requested.pods, u.host_ports.len()));
        assert_eq!(usage(&state), Some((250, 1, 1)));
        // A batch that binds q and then fails is rolled back whole: q takes nothing.
        let failing = Command::Batch(vec![bind("q"), Command::Create(objects[1].clone())]);
        assert!(apply_one(&mut state, failing).is_err());
        assert_eq!(usage(&state), Some((250, 1, 1)), "the rolled-back bind left no trace");
        assert!(apply_one(&mut state, bind("q")).is_ok());
        assert_eq!(usage(&state), Some((250, 2, 1)));
        // A status write of a running pod changes nothing; a pod created bound counts at once;
        // a graceful deletion still counts until the pod is gone. A state read back from its
        // snapshot has the same index.
        let Some(Object::Pod(q)) = state.get(&ObjectKey::new(Kind::Pod, "default", "q")).cloned() else {
            panic!("q is stored")
        };
        let mut running = (*q).clone();
        running.status.phase = Some(PodPhase::Running);
        assert!(apply_one(&mut state, Command::UpdateStatus(Object::from(running))).is_ok());
        assert_eq!(usage(&state), Some((250, 2, 1)));
        let mut bound = crate::manifest::parse_manifests(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: r}\nspec: {nodeName: n1, containers: [{name: c, image: x, \
             resources: {limits: {cpu: '1'}}}]}",
        )
        .expect("valid");
        assert!(apply_one(&mut state, Command::Create(bound.remove(0))).is_ok());
        assert_eq!(usage(&state), Some((1250, 3, 1)), "a limit stands for the request it leaves out");
        let graceful = delete_pod("r", 30);
        assert!(apply_one(&mut state, graceful).is_ok());
        assert!(state.get(&ObjectKey::new(Kind::Pod, "default", "r")).is_some(), "terminating, still stored");
        assert_eq!(usage(&state), Some((1250, 3, 1)), "a terminating pod still counts");
        assert_eq!(State::from_snapshot(&state.to_snapshot()).expect("restores"), state);
        // p finishes: its share is free while it is still stored.
        let Some(Object::Pod(p)) = state.get(&ObjectKey::new(Kind::Pod, "default", "p")).cloned() else {
            panic!("p is stored")
        };
        let mut finished = (*p).clone();
        finished.status.phase = Some(PodPhase::Succeeded);
        assert!(apply_one(&mut state, Command::UpdateStatus(Object::from(finished))).is_ok());
        assert_eq!(usage(&state), Some((1000, 2, 0)), "p's share is free");
        let delete = delete_pod("q", 0);
        assert!(apply_one(&mut state, delete).is_ok());
        let force = delete_pod("r", 0);
        assert!(apply_one(&mut state, force).is_ok());
        assert_eq!(state.node_usage("n1"), None, "nothing occupies n1 any more");
    }

    /// Applies `command` in an entry of rules version `rules`.
    fn apply_under(state: &mut State, rules: u16, command: Command) -> Outcome {
        let serial = state.applied_index() + 1;
        let request = Request { client: ClientId(1), serial, acked_below: 0, retry: false, command };
        let entry = Entry { rules, ..Entry::new(1_000, vec![request]) };
        let mut out = state.apply(serial, entry);
        state.check_invariants().expect("invariants hold after every entry");
        out.outcomes.remove(0)
    }

    fn refusal(outcome: Outcome) -> String {
        match outcome {
            Err(ApplyError::Conflict { reason, .. }) => reason,
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    /// A `Bind` to a node outside the pod's required node affinity is refused like any
    /// other misfit (the scheduler's filter, repeated when applied); one inside is taken.
    #[test]
    fn bind_is_refused_outside_the_required_node_affinity() {
        let mut state = State::new();
        let manifests = "apiVersion: v1\nkind: Node\nmetadata: {name: ssd, labels: {disk: ssd}}\n\
             status: {conditions: [{type: Ready, status: 'True'}], capacity: {cpu: '1', pods: '2'}}\n---\n\
             apiVersion: v1\nkind: Node\nmetadata: {name: hdd, labels: {disk: hdd}}\n\
             status: {conditions: [{type: Ready, status: 'True'}], capacity: {cpu: '1', pods: '2'}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  affinity: {nodeAffinity: \
             {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: \
             [{key: disk, operator: In, values: [ssd]}]}]}}}\n  containers: [{name: c, image: x}]\n";
        for obj in crate::manifest::parse_manifests(manifests).expect("valid") {
            assert!(apply_one(&mut state, Command::Create(obj)).is_ok());
        }
        let bind_to = |node: &str| Command::Bind {
            namespace: "default".into(),
            name: "p".into(),
            node: node.into(),
            preconditions: Preconditions::default(),
        };
        assert_eq!(
            refusal(apply_one(&mut state, bind_to("hdd"))),
            "pod p does not fit node \"hdd\": node(s) didn't match Pod's node affinity/selector"
        );
        assert!(apply_one(&mut state, bind_to("ssd")).is_ok());
    }

    /// Rules 3: a `Bind` is checked against the node as it is when applied, with the
    /// scheduler's own filters and what the pods bound to it take, so a decision made on a
    /// stale view is refused and the node is never over-committed; entries of rules 2 bind
    /// as they did (only that the node exists).
    #[test]
    fn bind_is_refused_when_the_pod_does_not_fit_the_node_as_it_is() {
        let mut state = State::new();
        let ready = "status: {conditions: [{type: Ready, status: 'True'}], capacity: {cpu: '1', pods: '2'}}";
        let manifests = format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: n1}}\n{ready}\n---\n\
             apiVersion: v1\nkind: Node\nmetadata: {{name: lost}}\n---\n\
             apiVersion: v1\nkind: Node\nmetadata: {{name: tainted}}\nspec: {{taints: [{{key: gpu, value: 'yes', effect: NoSchedule}}]}}\n{ready}"
        );
        for obj in crate::manifest::parse_manifests(&manifests).expect("valid") {
            assert!(apply_one(&mut state, Command::Create(obj)).is_ok());
        }
        for (name, cpu) in [("a", "600m"), ("b", "600m"), ("c", "0"), ("d", "0")] {
            let pod = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: x, \
                 resources: {{requests: {{cpu: '{cpu}'}}}}}}]}}"
            );
            let obj = crate::manifest::parse_manifests(&pod).expect("valid").remove(0);
            assert!(apply_one(&mut state, Command::Create(obj)).is_ok());
        }
        let bind_to = |name: &str, node: &str| Command::Bind {
            namespace: "default".into(),
            name: name.into(),
            node: node.into(),
            preconditions: Preconditions::default(),
        };
        let node_name = |state: &State, name: &str| {
            state.get(&ObjectKey::new(Kind::Pod, "default", name)).and_then(|o| o.as_pod()?.spec.node_name.clone())
        };
        assert!(apply_one(&mut state, bind_to("a", "n1")).is_ok());
        let before = state.clone();
        assert_eq!(
            refusal(apply_one(&mut state, bind_to("b", "n1"))),
            "pod b does not fit node \"n1\": Insufficient cpu"
        );
        assert_eq!(node_name(&state, "b"), None, "nothing written");
        assert_eq!(
            refusal(apply_one(&mut state, bind_to("b", "lost"))),
            "pod b does not fit node \"lost\": node(s) were not ready"
        );
        assert_eq!(
            refusal(apply_one(&mut state, bind_to("b", "tainted"))),
            "pod b does not fit node \"tainted\": node(s) had untolerated taint {gpu: yes}"
        );
        // The pods capacity counts too: c makes two, d would be a third.
        assert!(apply_one(&mut state, bind_to("c", "n1")).is_ok());
        assert_eq!(refusal(apply_one(&mut state, bind_to("d", "n1"))), "pod d does not fit node \"n1\": Too many pods");
        // A pod that left frees its share: b now fits.
        assert!(apply_one(&mut state, delete_pod("a", 0)).is_ok());
        assert!(apply_one(&mut state, bind_to("b", "n1")).is_ok());
        assert_eq!(node_name(&state, "b").as_deref(), Some("n1"));
        // The same stale decision in an entry of rules 2 binds as rules 2 did.
        let mut old = before;
        assert!(apply_under(&mut old, 2, bind_to("b", "n1")).is_ok());
        assert!(apply_under(&mut old, 2, bind_to("c", "lost")).is_ok());
        assert_eq!(old.node_usage("n1").map(|u| u.requested.cpu), Some(1200), "over-committed under rules 2");
    }

    /// Rules 4: re-applying a manifest keeps the deployment controller's annotations and the
    /// replicas it leaves out (a scale stays); one that names them sets them. Under rules 3
    /// the apply replaced the whole object.
    #[test]
    fn apply_keeps_the_controller_s_annotations_and_the_replicas_a_manifest_leaves_out() {
        let manifest = |extra: &str| {
            let yaml = format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, annotations: {{team: a}}}}\nspec:\n  \
                 {extra}selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    \
                 spec: {{containers: [{{name: c, image: x}}]}}\n"
            );
            crate::manifest::parse_manifests(&yaml).expect("valid").remove(0)
        };
        let key = ObjectKey::new(Kind::Deployment, "default", "web");
        let mut state = State::new();
        assert!(apply_one(&mut state, Command::Apply(manifest(""))).is_ok());
        assert!(apply_one(&mut state, Command::Scale { key: key.clone(), replicas: 4 }).is_ok());
        let Some(Object::Deployment(d)) = state.get(&key).cloned() else { panic!("stored") };
        let mut annotated = (*d).clone();
        annotated.metadata.annotations.insert(REVISION, "2");
        assert!(apply_one(&mut state, Command::Update(Object::from(annotated))).is_ok());
        let before = state.clone();
        let get = |state: &State| match state.get(&key) {
            Some(Object::Deployment(d)) => (d.spec.replicas, d.metadata.annotations.get(REVISION).map(str::to_owned)),
            _ => panic!("stored"),
        };
        assert!(apply_one(&mut state, Command::Apply(manifest(""))).is_ok());
        assert_eq!(get(&state), (Some(4), Some("2".to_owned())), "kept");
        assert!(apply_one(&mut state, Command::Apply(manifest("replicas: 2\n  "))).is_ok());
        assert_eq!(get(&state), (Some(2), Some("2".to_owned())), "replicas named: set");
        // Rules 4 and 5 keep them by a rule of their own (rules 6 by the merge).
        for rules in [4, 5] {
            let mut old = before.clone();
            assert!(apply_under(&mut old, rules, Command::Apply(manifest(""))).is_ok());
            assert_eq!(get(&old), (Some(4), Some("2".to_owned())), "rules {rules} kept them");
            let annotated = |s: &State| s.get(&key).is_some_and(|d| d.meta().annotations.contains_key(LAST));
            assert!(!annotated(&old), "rules {rules} recorded no manifest");
        }
        let mut old = before;
        assert!(apply_under(&mut old, 3, Command::Apply(manifest(""))).is_ok());
        assert_eq!(get(&old), (Some(1), None), "rules 3 replaced the object");
        // An apply of a manifest is of rules 6 on; no earlier build wrote one.
        let text = serde_json::to_string(&manifest("").to_manifest()).expect("JSON");
        let refused = apply_under(&mut old, 5, Command::ApplyManifest(text));
        assert!(matches!(refused, Err(ApplyError::BadRequest { .. })), "{refused:?}");
    }

    const LAST: &str = crate::merge::LAST_APPLIED_ANNOTATION;

    const REVISION: &str = crate::apps_v1::REVISION_ANNOTATION;

    /// Rules 4: `rollout undo` brings the revision's annotations back with its template (but
    /// the controller's own), as kubectl; under rules 3 only the template.
    #[test]
    fn rollout_undo_restores_the_revision_s_annotations() {
        let mut state = State::new();
        let d = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, annotations: \
                 {deployment.kubernetes.io/revision: '2', kubernetes.io/change-cause: now}}\nspec:\n  \
                 selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    \
                 spec: {containers: [{name: c, image: 'x:2'}]}\n";
        assert!(
            apply_one(&mut state, Command::Create(crate::manifest::parse_manifests(d).expect("valid").remove(0)))
                .is_ok()
        );
        let key = ObjectKey::new(Kind::Deployment, "default", "web");
        let uid = state.get(&key).and_then(|o| o.meta().uid).expect("uid");
        for (revision, cause) in [(1, "then"), (2, "now")] {
            let rs = format!(
                "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-{revision}\n  annotations: \
                 {{deployment.kubernetes.io/revision: '{revision}', kubernetes.io/change-cause: {cause}}}\n  \
                 ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: web, uid: '{uid}', controller: true}}]\n\
                 spec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    \
                 spec: {{containers: [{{name: c, image: 'x:{revision}'}}]}}\n"
            );
            let rs = crate::manifest::parse_manifests(&rs).expect("valid").remove(0);
            assert!(apply_one(&mut state, Command::Create(rs)).is_ok());
        }
        let undo = Command::RolloutUndo { namespace: "default".into(), name: "web".into(), to_revision: 0 };
        let mut old = state.clone();
        assert!(apply_one(&mut state, undo.clone()).is_ok());
        let annotations = |state: &State| match state.get(&key) {
            Some(Object::Deployment(d)) => {
                assert_eq!(d.spec.template.spec.containers[0].image.as_str(), "x:1");
                d.metadata.annotations.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()
            }
            _ => panic!("stored"),
        };
        assert_eq!(annotations(&state), ["deployment.kubernetes.io/revision=2", "kubernetes.io/change-cause=then"]);
        assert!(apply_under(&mut old, 3, undo).is_ok());
        assert_eq!(annotations(&old), ["deployment.kubernetes.io/revision=2", "kubernetes.io/change-cause=now"]);
    }

    /// Owner references are indexed by owner uid: a create, an update that changes them, a
    /// rolled-back request and a deletion keep the index equal to the references.
    #[test]
    fn apply_keeps_the_index_of_objects_by_owner() {
        let (owner, other) = (Uid::from_u128(42), Uid::from_u128(43));
        let owned = |name: &str, uid: Uid| {
            let manifest = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, ownerReferences: [{{apiVersion: apps/v1, \
                 kind: ReplicaSet, name: rs, uid: '{uid}', controller: true}}]}}\nspec: {{containers: [{{name: c, image: x}}]}}"
            );
            crate::manifest::parse_manifests(&manifest).expect("valid").remove(0)
        };
        let mut state = State::new();
        assert!(apply_one(&mut state, Command::Create(owned("a", owner))).is_ok());
        assert!(apply_one(&mut state, Command::Create(owned("b", owner))).is_ok());
        let keys = |state: &State, uid: Uid| state.owned_by(uid).map(|k| k.name.to_string()).collect::<Vec<_>>();
        assert_eq!(keys(&state, owner), ["a", "b"]);
        let moved = |state: &State, name: &str| {
            let mut obj = state.get(&ObjectKey::new(Kind::Pod, "default", name)).cloned().expect("stored");
            obj.meta_mut().owner_references[0].uid = other;
            obj
        };
        let a = moved(&state, "a");
        assert!(apply_one(&mut state, Command::Update(a)).is_ok());
        assert_eq!((keys(&state, owner), keys(&state, other)), (vec!["b".to_owned()], vec!["a".to_owned()]));
        let failing = Command::Batch(vec![Command::Update(moved(&state, "b")), Command::Create(owned("a", owner))]);
        assert!(apply_one(&mut state, failing).is_err());
        assert_eq!(keys(&state, owner), ["b"], "the rolled-back update left no trace");
        assert!(apply_one(&mut state, delete_pod("b", 0)).is_ok());
        assert!(keys(&state, owner).is_empty());
        assert_eq!(State::from_snapshot(&state.to_snapshot()).expect("restores"), state);
    }

    /// A snapshot (a `--restore` file, say) that says the state was never bootstrapped yet
    /// holds objects is refused when it is read: applying to it would create `default` again,
    /// which could only fail (an `unreachable!` before).
    #[test]
    fn a_snapshot_not_bootstrapped_yet_holding_objects_is_refused() {
        let mut state = State::new();
        create_namespace(&mut state, "a");
        state.bootstrapped = false;
        let err = State::from_snapshot(&state.to_snapshot()).expect_err("inconsistent");
        assert!(err.to_string().contains("not bootstrapped, yet it holds 2 objects at revision 1"), "{err}");
        let fresh = State::new();
        assert_eq!(State::from_snapshot(&fresh.to_snapshot()).expect("a fresh state reads"), fresh);
    }

    #[test]
    fn a_copy_shares_the_maps_until_the_original_changes() {
        let mut state = State::new();
        create_namespace(&mut state, "a");
        let copy = state.clone();
        assert!(copy.objects.ptr_eq(&state.objects), "a copy shares the object map");
        let digest = copy.digest();
        create_namespace(&mut state, "b");
        assert!(!copy.objects.ptr_eq(&state.objects));
        assert_eq!(copy.digest(), digest, "the copy keeps the state it was taken at");
        assert_eq!((copy.len(), state.len()), (2, 3));
        copy.check_invariants().expect("the copy is whole");
        state.check_invariants().expect("the original is whole");
    }

    /// Rules 5: a new pod gets 300 s tolerations of the not-ready and unreachable `NoExecute`
    /// taints unless it tolerates them already (by key, or every key), or has no room for
    /// them; under rules 4 it gets none. An update adds them too, so that the same manifest
    /// applied again is not a change.
    #[test]
    fn a_new_pod_gets_the_default_tolerations() {
        let tolerations = |rules: u16, name: &str, tolerations: &str| {
            let mut state = State::new();
            let pod = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{tolerations: {tolerations}, \
                 containers: [{{name: c, image: x}}]}}\n"
            );
            let pod = crate::manifest::parse_manifests(&pod).expect("valid").remove(0);
            let outcome = apply_under(&mut state, rules, Command::Create(pod.clone()));
            assert!(outcome.is_ok(), "{outcome:?}");
            // The same manifest applied again changes nothing (under rules 4 too).
            let again = apply_under(&mut state, rules, Command::Apply(pod));
            assert!(matches!(&again, Ok(s) if s.changes.iter().all(|c| c.action == Action::Unchanged)), "{again:?}");
            let key = ObjectKey::new(Kind::Pod, "default", name);
            let stored = state.get(&key).and_then(Object::as_pod).expect("stored").clone();
            stored
                .spec
                .tolerations
                .iter()
                .map(|t| format!("{}:{:?}:{:?}", t.key.as_deref().unwrap_or(""), t.effect, t.toleration_seconds))
                .collect::<Vec<_>>()
        };
        assert!(tolerations(4, "old", "[]").is_empty());
        assert_eq!(
            tolerations(5, "new", "[]"),
            [
                "node.kubernetes.io/not-ready:Some(NoExecute):Some(300)",
                "node.kubernetes.io/unreachable:Some(NoExecute):Some(300)"
            ]
        );
        assert_eq!(tolerations(5, "all", "[{operator: Exists}]"), [":None:None"]);
        assert_eq!(
            tolerations(
                5,
                "one",
                "[{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 9}]"
            ),
            [
                "node.kubernetes.io/unreachable:Some(NoExecute):Some(9)",
                "node.kubernetes.io/not-ready:Some(NoExecute):Some(300)"
            ]
        );
        let full = format!("[{}]", vec!["{key: k, operator: Exists}"; crate::validation::LIST_ITEMS_MAX].join(", "));
        assert_eq!(tolerations(5, "full", &full).len(), crate::validation::LIST_ITEMS_MAX);
    }

    /// Rules 5: a manifest re-applied with a toleration added is taken (the stored ones, the
    /// defaults among them, stay first, as Kubernetes compares tolerations as a set); one that
    /// drops a toleration is still refused.
    #[test]
    fn a_pod_re_applied_with_a_toleration_added_is_taken() {
        let mut state = State::new();
        let manifest = |tolerations: &str| {
            let pod = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{tolerations: {tolerations}, \
                 containers: [{{name: c, image: x}}]}}\n"
            );
            crate::manifest::parse_manifests(&pod).expect("valid").remove(0)
        };
        let a = "{key: a, operator: Exists}";
        let b = "{key: b, operator: Exists}";
        assert!(apply_under(&mut state, 5, Command::Apply(manifest(&format!("[{a}]")))).is_ok());
        let added = apply_under(&mut state, 5, Command::Apply(manifest(&format!("[{a}, {b}]"))));
        assert!(added.is_ok(), "{added:?}");
        let key = ObjectKey::new(Kind::Pod, "default", "p");
        let keys = |state: &State| -> Vec<String> {
            let pod = state.get(&key).and_then(Object::as_pod).expect("stored");
            pod.spec.tolerations.iter().map(|t| t.key.as_deref().unwrap_or("").to_owned()).collect()
        };
        assert_eq!(keys(&state), ["a", "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable", "b"]);
        let dropped = apply_under(&mut state, 5, Command::Apply(manifest(&format!("[{b}]"))));
        assert!(matches!(dropped, Err(ApplyError::Invalid { .. })), "{dropped:?}");
    }

    fn one(manifest: &str) -> Object {
        crate::manifest::parse_manifests(manifest).expect("parses").remove(0)
    }

    fn invalid_fields(outcome: Outcome) -> Vec<String> {
        match outcome {
            Err(ApplyError::Invalid { errors, .. }) => errors.0.iter().map(ToString::to_string).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    /// Rules 8: a container may name no image (the process runtime runs `command`); entries
    /// of rules 7 and before still refuse one without, as they were applied.
    #[test]
    fn an_image_is_optional_from_rules_8_on() {
        let pod = one(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, command: [sleep, '1']}]}",
        );
        let mut state = State::new();
        let old = apply_under(&mut state, 7, Command::Create(pod.clone()));
        assert_eq!(invalid_fields(old), ["spec.containers[0].image: Required value"]);
        assert!(apply_under(&mut state, 8, Command::Create(pod)).is_ok());
        let Some(Object::Pod(stored)) = state.get(&ObjectKey::new(Kind::Pod, "default", "p")) else { panic!("stored") };
        assert_eq!(stored.spec.containers[0].image_pull_policy, None, "no image, no pull policy");
    }

    /// ConfigMaps and Secrets are validated as Kubernetes validates them; a Secret's
    /// `stringData` is merged into `data` (base64) and not stored; immutable ones stay so.
    #[test]
    fn config_maps_and_secrets_are_validated_and_stored() {
        let mut state = State::new();
        let bad = one(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {'a b': x, ok: y}\nbinaryData: {ok: eQ==, z: '!!'}",
        );
        let errors = invalid_fields(apply_one(&mut state, Command::Create(bad)));
        assert!(errors.iter().any(|e| e.starts_with("data: Invalid value: \"a b\": a valid config key")), "{errors:?}");
        assert!(
            errors.iter().any(|e| e == "data: Invalid value: \"ok\": duplicate of key present in binaryData"),
            "{errors:?}"
        );
        assert!(errors.iter().any(|e| e.starts_with("binaryData[z]: Invalid value")), "{errors:?}");
        let big = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata: {{a: {}, b: {}}}",
            "x".repeat(600 * 1024),
            "y".repeat(600 * 1024)
        );
        let errors = invalid_fields(apply_one(&mut state, Command::Create(one(&big))));
        assert_eq!(errors, ["data: Too long: may not be more than 1048576 bytes"]);
        // Within 1 MiB, one value may exceed the limit of other strings.
        let fits = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: fits}}\ndata: {{a: {}}}",
            "x".repeat(900 * 1024)
        );
        assert!(apply_one(&mut state, Command::Create(one(&fits))).is_ok());

        let secret = one(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: hunter2}\ndata: {user: YWRtaW4=}",
        );
        assert!(apply_one(&mut state, Command::Create(secret)).is_ok());
        let Some(Object::Secret(s)) = state.get(&ObjectKey::new(Kind::Secret, "default", "s")) else {
            panic!("stored")
        };
        assert_eq!(s.data.get("password"), Some("aHVudGVyMg=="));
        assert_eq!(s.data.get("user"), Some("YWRtaW4="));
        assert!(s.string_data.is_empty());
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        let not_base64 = one("apiVersion: v1\nkind: Secret\nmetadata: {name: t}\ndata: {k: 'not base64'}");
        let errors = invalid_fields(apply_one(&mut state, Command::Create(not_base64)));
        assert_eq!(errors, ["data[k]: Invalid value: <value omitted>: must be base64 (RFC 4648, with padding)"]);

        let frozen = one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: f}\ndata: {a: '1'}\nimmutable: true");
        assert!(apply_one(&mut state, Command::Create(frozen)).is_ok());
        let changed = one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: f}\ndata: {a: '2'}\nimmutable: true");
        let errors = invalid_fields(apply_one(&mut state, Command::Update(changed)));
        assert_eq!(errors, ["data: Forbidden: field is immutable when `immutable` is set"]);
        let thawed = one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: f}\ndata: {a: '1'}");
        let errors = invalid_fields(apply_one(&mut state, Command::Update(thawed)));
        assert_eq!(errors, ["immutable: Forbidden: field is immutable when `immutable` is set"]);
    }

    /// What a pod takes from ConfigMaps and Secrets is validated: one source per variable and
    /// volume, mounts of volumes the pod has at absolute paths, supported field paths.
    #[test]
    fn pod_volumes_and_variable_sources_are_validated() {
        let mut state = State::new();
        let pod = one(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    command: [sleep]\n    env:\n    - {name: A, value: x, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n    - {name: B, valueFrom: {fieldRef: {fieldPath: spec.schedulerName}}}\n    - {name: C, valueFrom: {}}\n    - {name: D, valueFrom: {configMapKeyRef: {name: cm, key: 'a/b'}}}\n    envFrom: [{prefix: '1x', configMapRef: {name: cm}}, {}]\n    volumeMounts:\n    - {name: nope, mountPath: /a}\n    - {name: v, mountPath: relative}\n    - {name: v, mountPath: /b}\n    - {name: w, mountPath: /b/}\n  volumes:\n  - {name: v, emptyDir: {}}\n  - {name: w, configMap: {name: cm, items: [{key: k, path: ../x}], defaultMode: 512}}\n  - {name: x}\n  - {name: y, emptyDir: {}, secret: {secretName: s}}\n",
        );
        let errors = invalid_fields(apply_one(&mut state, Command::Create(pod)));
        let expected = [
            "spec.volumes[1].configMap.items[0].path: Invalid value: \"../x\": must not contain '..'",
            "spec.volumes[1].configMap.defaultMode: Invalid value: 512: must be a number between 0 and 0777 (octal), both inclusive",
            "spec.volumes[2]: Required value: must specify a volume type: `emptyDir`, `configMap` or `secret`",
            "spec.volumes[3]: Forbidden: may not specify more than 1 volume type",
            "spec.containers[0].volumeMounts[0].name: Not found: \"nope\": ",
            "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"relative\": must be an absolute path",
            "spec.containers[0].volumeMounts[3].mountPath: Invalid value: \"/b/\": must be unique",
            "spec.containers[0].envFrom[0].prefix: Invalid value: \"1x\": a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit",
            "spec.containers[0].envFrom[1]: Required value: must specify one of: `configMapRef` or `secretRef`",
            "spec.containers[0].env[0].valueFrom: Invalid value: : may not be specified when `value` is not empty",
            "spec.containers[0].env[2].valueFrom: Invalid value: : must specify one of: `fieldRef`, `configMapKeyRef` or `secretKeyRef`",
        ];
        for e in expected {
            assert!(errors.iter().any(|x| x == e), "missing {e:?} in {errors:#?}");
        }
        assert!(
            errors.iter().any(|e| e.starts_with(
                "spec.containers[0].env[1].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.schedulerName\""
            )),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e
                    .starts_with("spec.containers[0].env[3].valueFrom.configMapKeyRef.key: Invalid value: \"a/b\"")),
            "{errors:#?}"
        );

        let good = one(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: q}\nspec:\n  hostNetwork: true\n  containers:\n  - name: c\n    command: [sleep]\n    ports: [{containerPort: 8080}]\n    env:\n    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}\n    - {name: APP, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['app']\"}}}\n    volumeMounts: [{name: cfg, mountPath: /etc/cfg}]\n  volumes: [{name: cfg, configMap: {name: cm}}]\n",
        );
        assert!(apply_one(&mut state, Command::Create(good)).is_ok());
        let Some(Object::Pod(p)) = state.get(&ObjectKey::new(Kind::Pod, "default", "q")) else { panic!("stored") };
        assert_eq!(p.spec.containers[0].ports[0].host_port, Some(8080), "a hostNetwork pod's port is the node's");
        assert_eq!(p.spec.volumes[0].config_map.as_ref().and_then(|c| c.default_mode), Some(0o644));
        let field = p.spec.containers[0].env[0].value_from.as_ref().and_then(|f| f.field_ref.as_ref());
        assert_eq!(field.and_then(|f| f.api_version.as_deref()), Some("v1"));
    }

    /// The rest of the volume and variable rules: sources, media, sizes, item paths, mount
    /// paths, a `hostNetwork` pod's host ports.
    #[test]
    fn more_pod_volume_rules_are_enforced() {
        let mut state = State::new();
        let pod = one(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  containers:\n  - name: c\n    command: [sleep]\n    ports: [{containerPort: 80, hostPort: 81}]\n    envFrom: [{configMapRef: {name: a}, secretRef: {name: b}}]\n    volumeMounts: [{name: v, mountPath: /}, {name: v, mountPath: /a/../b}]\n  volumes:\n  - {name: v, emptyDir: {medium: Disk, sizeLimit: '-1'}}\n  - {name: w, configMap: {name: cm, items: [{key: a, path: x}, {key: b, path: x/y}, {key: c, path: ./z}, {key: d, path: 'q/'}]}}\n",
        );
        let errors = invalid_fields(apply_one(&mut state, Command::Create(pod)));
        let expected = [
            "spec.volumes[0].emptyDir.medium: Unsupported value: \"Disk\": supported values: \"\", \"Memory\"",
            "spec.volumes[0].emptyDir.sizeLimit: Invalid value: \"-1\": must be greater than or equal to 0",
            "spec.volumes[1].configMap.items[1].path: Invalid value: \"x/y\": must not be a directory of or under another item's path \"x\"",
            "spec.volumes[1].configMap.items[2].path: Invalid value: \"./z\": must be a path of names: no empty or '.' parts, no trailing '/'",
            "spec.volumes[1].configMap.items[3].path: Invalid value: \"q/\": must be a path of names: no empty or '.' parts, no trailing '/'",
            "spec.containers[0].volumeMounts[0].mountPath: Invalid value: \"/\": must not be the root directory",
            "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/a/../b\": must not contain '..'",
            "spec.containers[0].envFrom[0]: Forbidden: may not have more than one field specified at a time",
            "spec.containers[0].ports[0].hostPort: Invalid value: 81: must match `containerPort` when `hostNetwork` is true",
        ];
        for e in expected {
            assert!(errors.iter().any(|x| x == e), "missing {e:?} in {errors:#?}");
        }
    }

    /// A Secret holds at most 1 MiB decoded; base64 is read as Go's (line breaks skipped); its
    /// type and, once immutable, its data stay.
    #[test]
    fn secrets_are_bounded_and_keep_their_type() {
        use base64::Engine as _;
        let mut state = State::new();
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
        let big = format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: big}}\ndata: {{a: '{}'}}", b64(1024 * 1024));
        let errors = invalid_fields(apply_one(&mut state, Command::Create(one(&big))));
        assert_eq!(errors, ["data: Too long: may not be more than 1048576 bytes"]);
        // 700 KiB decoded is 933 KiB of base64: within the bound, which counts decoded bytes.
        let fits =
            format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: fits}}\ndata: {{a: '{}'}}", b64(700 * 1024));
        assert!(apply_one(&mut state, Command::Create(one(&fits))).is_ok());
        let wrapped = "apiVersion: v1\nkind: Secret\nmetadata: {name: wrapped}\ndata: {a: \"aGVs\\nbG8=\"}\ntype: example.com/token\nimmutable: true";
        assert!(apply_one(&mut state, Command::Create(one(wrapped))).is_ok(), "line breaks are skipped, as Go does");
        let retyped = "apiVersion: v1\nkind: Secret\nmetadata: {name: wrapped}\ndata: {a: \"aGVs\\nbG8=\"}\ntype: Opaque\nimmutable: true";
        let errors = invalid_fields(apply_one(&mut state, Command::Update(one(retyped))));
        assert_eq!(errors, ["type: Invalid value: \"Opaque\": field is immutable"]);
        let changed = "apiVersion: v1\nkind: Secret\nmetadata: {name: wrapped}\ndata: {a: aGk=}\ntype: example.com/token\nimmutable: true";
        let errors = invalid_fields(apply_one(&mut state, Command::Update(one(changed))));
        assert_eq!(errors, ["data: Forbidden: field is immutable when `immutable` is set"]);
    }

    /// Rules 8: a pod created without an image may be given one (with the pull policy the
    /// defaults give it); other changes stay forbidden.
    #[test]
    fn a_pod_without_an_image_may_be_given_one() {
        let mut state = State::new();
        let bare = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, command: [sleep]}]}";
        assert!(apply_under(&mut state, 8, Command::Create(one(bare))).is_ok());
        let imaged = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: 'busybox:1', command: [sleep]}]}";
        assert!(apply_under(&mut state, 8, Command::Update(one(imaged))).is_ok());
        let Some(Object::Pod(p)) = state.get(&ObjectKey::new(Kind::Pod, "default", "p")) else { panic!("stored") };
        assert_eq!(p.spec.containers[0].image, "busybox:1");
        let moved = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: 'busybox:1', command: [sleep, '2']}]}";
        assert!(matches!(apply_under(&mut state, 8, Command::Update(one(moved))), Err(ApplyError::Invalid { .. })));
    }
}
