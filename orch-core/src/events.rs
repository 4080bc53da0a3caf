//! Events for the controllers' key transitions (`Scheduled`, `FailedScheduling`,
//! `SuccessfulCreate`, `SuccessfulDelete`, `ScalingReplicaSet`, `NodeNotReady`,
//! `TaintManagerEviction`), deduplicated with a count as Kubernetes' event correlator does.
//!
//! A reconciler hands its owner [`Record`]s ([`crate::reconcile::Reconciler::events`]); the
//! owner turns them into commands with [`commands`] and proposes them beside the reconciler's
//! own, whose fates it does not report back. An event is named after what it says: the
//! involved object's name and a hash of (object, uid, component, type, reason, message), so
//! the same thing happening again finds its event by key and counts it (`count`,
//! `lastTimestamp`) instead of writing another, and a record is a pure function of the state.
//! Events are best effort, as in Kubernetes: a count raced by another (the event's creation
//! not yet applied, a concurrent update) is lost, never an error. They expire with the
//! garbage collector's event TTL ([`crate::gc`]).

use std::collections::BTreeMap;

use crate::command::Command;
use crate::core_v1::{Event, EventSource};
use crate::meta::{ObjectMeta, ObjectReference};
use crate::object::{Kind, Object, ObjectKey};
use crate::state::State;
use crate::time::Time;

/// The most bytes of an event's message (Kubernetes cuts at 1,024 characters too).
pub const EVENT_MESSAGE_BYTES_MAX: usize = 1024;
/// The most bytes of the involved object's name an event's name keeps (then `.` and 16 hex
/// digits: within the 253 of a name).
const NAME_PREFIX_BYTES_MAX: usize = 200;

/// An event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventType {
    /// Things going as they should.
    Normal,
    /// Something to look at.
    Warning,
}

impl EventType {
    /// The type as written in an event.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One occurrence of something a reconciler reports about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The reporting component, as Kubernetes names it (`default-scheduler`,
    /// `replicaset-controller`, ...).
    pub component: &'static str,
    /// The object the event is about.
    pub kind: Kind,
    /// Its namespace (empty for a cluster-scoped object).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid, when known.
    pub uid: Option<crate::ids::Uid>,
    /// Normal or Warning.
    pub type_: EventType,
    /// A short CamelCase reason (`Scheduled`).
    pub reason: &'static str,
    /// What happened, for people.
    pub message: String,
}

impl Record {
    /// A record about `object`.
    pub fn about(
        component: &'static str,
        object: &Object,
        type_: EventType,
        reason: &'static str,
        message: String,
    ) -> Record {
        let meta = object.meta();
        Record {
            component,
            kind: object.kind(),
            namespace: meta.namespace_str().to_owned(),
            name: meta.name.to_string(),
            uid: meta.uid,
            type_,
            reason,
            message,
        }
    }

    /// The key of the event that records this: in the object's namespace (a cluster-scoped
    /// object's events in `default`, as Kubernetes'), named `<object>.<hash>`.
    pub fn event_key(&self) -> ObjectKey {
        self.key(true)
    }

    /// The key of the event that records this one combined with similar ones (the same but
    /// for the message).
    fn combined_key(&self) -> ObjectKey {
        self.key(false)
    }

    fn key(&self, with_message: bool) -> ObjectKey {
        let mut hasher = blake3::Hasher::new();
        let uid = self.uid.map(|u| u.to_string()).unwrap_or_default();
        let message = if with_message { self.message.as_str() } else { COMBINED };
        for part in [
            self.kind.as_str(),
            &self.namespace,
            &self.name,
            &uid,
            self.component,
            self.type_.as_str(),
            self.reason,
            message,
        ] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        let hash = hasher.finalize();
        // A name part ends with an alphanumeric, as a DNS subdomain's labels do.
        let prefix = match crate::text::cut(&self.name, NAME_PREFIX_BYTES_MAX) {
            cut if cut.len() < self.name.len() => cut.trim_end_matches(['-', '.']),
            whole => whole,
        };
        let mut digits = String::with_capacity(16);
        for b in &hash.as_bytes()[..8] {
            digits.push_str(&format!("{b:02x}"));
        }
        let namespace =
            if self.kind.namespaced() { self.namespace.as_str() } else { crate::defaults::DEFAULT_NAMESPACE };
        ObjectKey::new(Kind::Event, namespace, &format!("{prefix}.{digits}"))
    }
}

/// The message prefix of an event that stands for several similar ones, as Kubernetes'.
pub const COMBINED: &str = "(combined from similar events): ";
/// More records than this of one object, component, type and reason in one round are
/// recorded as one combined event (Kubernetes' aggregator combines more than 10 similar events
/// in 10 minutes), so a set creating 500 pods writes one event, not 500.
pub const SIMILAR_RECORDS_MAX: usize = 10;

/// The commands that record `records` at `now_ms`: for each event key, a create of the event
/// with the number of its records as its count, or an update counting them onto the stored
/// one (under its resourceVersion, so a racing update loses the count rather than a write).
pub fn commands(state: &State, now_ms: i64, records: Vec<Record>) -> Vec<Command> {
    // Similar records (one object, component, type and reason) first: many become one.
    let mut similar: BTreeMap<ObjectKey, Vec<Record>> = BTreeMap::new();
    for record in records {
        similar.entry(record.combined_key()).or_default().push(record);
    }
    let mut by_key: BTreeMap<ObjectKey, (Record, i32)> = BTreeMap::new();
    for (combined, mut group) in similar {
        if group.len() > SIMILAR_RECORDS_MAX {
            let n = i32::try_from(group.len()).unwrap_or(i32::MAX);
            if let Some(mut last) = group.pop() {
                last.message = format!("{COMBINED}{}", last.message);
                by_key.insert(combined, (last, n));
            }
            continue;
        }
        for record in group {
            by_key.entry(record.event_key()).and_modify(|(_, n)| *n = n.saturating_add(1)).or_insert((record, 1));
        }
    }
    let now = Time::from_millis(now_ms);
    by_key
        .into_iter()
        .map(|(key, (record, n))| match state.get(&key) {
            Some(Object::Event(stored)) => {
                let mut event = (**stored).clone();
                event.count = Some(event.count.unwrap_or(1).saturating_add(n));
                event.last_timestamp = Some(now);
                // A combined event says the latest of what it stands for.
                event.message = Some(cut_message(record.message).into());
                Command::Update(Object::from(event))
            }
            _ => Command::Create(Object::from(new_event(key, record, n, now))),
        })
        .collect()
}

fn cut_message(message: String) -> String {
    match crate::text::cut(&message, EVENT_MESSAGE_BYTES_MAX) {
        cut if cut.len() < message.len() => cut.to_owned(),
        _ => message,
    }
}

fn new_event(key: ObjectKey, record: Record, count: i32, now: Time) -> Event {
    let message = cut_message(record.message);
    let namespaced = record.kind.namespaced();
    Event {
        metadata: ObjectMeta {
            name: key.name.as_str().into(),
            namespace: Some(key.namespace.as_str().into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            kind: Some(record.kind.as_str().into()),
            namespace: namespaced.then(|| record.namespace.as_str().into()),
            name: Some(record.name.as_str().into()),
            uid: record.uid,
            api_version: Some(record.kind.api_version().into()),
            ..ObjectReference::default()
        },
        reason: Some(record.reason.into()),
        message: Some(message.into()),
        type_: Some(record.type_.as_str().into()),
        count: Some(count),
        first_timestamp: Some(now),
        last_timestamp: Some(now),
        source: EventSource { component: Some(record.component.into()), host: None },
    }
}

/// The event that records `record` as a first occurrence at `now_ms` (for a writer without
/// the state, such as a node agent: a create that finds the event there already is dropped,
/// as Kubernetes' best-effort events are).
pub fn first_event(record: Record, now_ms: i64) -> Event {
    let key = record.event_key();
    new_event(key, record, 1, Time::from_millis(now_ms))
}

/// Whether `command` writes an event (what an owner proposes for [`commands`] and keeps from
/// its reconciler's fates).
pub fn is_event_write(command: &Command) -> bool {
    matches!(command, Command::Create(Object::Event(_)) | Command::Update(Object::Event(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::world::World;

    fn scheduled(pod: &str) -> Record {
        Record {
            component: "default-scheduler",
            kind: Kind::Pod,
            namespace: "default".into(),
            name: pod.into(),
            uid: None,
            type_: EventType::Normal,
            reason: "Scheduled",
            message: format!("Successfully assigned default/{pod} to n1"),
        }
    }

    fn event(w: &World, key: &ObjectKey) -> Event {
        match w.state.get(key) {
            Some(Object::Event(e)) => (**e).clone(),
            other => panic!("expected the event, got {other:?}"),
        }
    }

    #[test]
    fn the_same_thing_again_counts_on_one_event() {
        let mut w = World::new();
        let key = scheduled("p").event_key();
        assert!(key.name.starts_with("p.") && key.name.len() == 2 + 16, "{key}");
        // Twice in one round: one create, counted twice.
        let first = commands(&w.state, w.now_ms, vec![scheduled("p"), scheduled("p"), scheduled("q")]);
        assert_eq!(first.len(), 2);
        assert!(w.apply(first).iter().all(Result::is_ok));
        let e = event(&w, &key);
        assert_eq!((e.count, e.reason.as_deref(), e.type_.as_deref()), (Some(2), Some("Scheduled"), Some("Normal")));
        assert_eq!(e.source.component.as_deref(), Some("default-scheduler"));
        assert_eq!(e.involved_object.name.as_deref(), Some("p"));
        // Again later: the same event, counted, its last time moved.
        let created = e.first_timestamp;
        let again = commands(&w.state, w.now_ms + 5_000, vec![scheduled("p")]);
        assert!(matches!(again.as_slice(), [Command::Update(_)]), "{again:?}");
        assert!(w.apply(again).iter().all(Result::is_ok));
        let e = event(&w, &key);
        assert_eq!(e.count, Some(3));
        assert_eq!(e.first_timestamp, created);
        assert!(e.last_timestamp > created);
        // Another message is another event.
        let mut other = scheduled("p");
        other.message.push('!');
        assert_ne!(other.event_key(), key);
    }

    #[test]
    fn a_node_s_events_go_to_default_and_long_names_and_messages_are_cut() {
        let mut w = World::new();
        let record = Record {
            component: "node-controller",
            kind: Kind::Node,
            namespace: String::new(),
            name: format!("n{}-{}", "x".repeat(198), "y".repeat(53)),
            uid: None,
            type_: EventType::Normal,
            reason: "NodeNotReady",
            message: "m".repeat(5_000),
        };
        let key = record.event_key();
        assert_eq!(key.namespace.as_str(), "default");
        assert!(key.name.len() <= 253);
        let out = w.apply(commands(&w.state, w.now_ms, vec![record]));
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        let e = event(&w, &key);
        assert_eq!(e.message.map(|m| m.len()), Some(EVENT_MESSAGE_BYTES_MAX));
        assert_eq!(e.involved_object.namespace, None);
        assert!(!key.name.contains("-."), "the cut name part ends with an alphanumeric: {key}");
    }

    #[test]
    fn many_similar_records_of_a_round_are_one_combined_event() {
        let mut w = World::new();
        let created = |n: usize| Record {
            component: "replicaset-controller",
            kind: Kind::ReplicaSet,
            namespace: "default".into(),
            name: "web".into(),
            uid: None,
            type_: EventType::Normal,
            reason: "SuccessfulCreate",
            message: format!("Created pod: web-{n}"),
        };
        // Ten are ten events; eleven are one, which says the last and counts them all.
        assert_eq!(commands(&w.state, w.now_ms, (0..10).map(created).collect()).len(), 10);
        let burst = commands(&w.state, w.now_ms, (0..500).map(created).collect());
        assert_eq!(burst.len(), 1);
        assert!(w.apply(burst).iter().all(Result::is_ok));
        let key = created(0).combined_key();
        let e = event(&w, &key);
        assert_eq!(e.count, Some(500));
        assert_eq!(e.message.as_deref(), Some("(combined from similar events): Created pod: web-499"));
        // The next burst counts onto it.
        let next = commands(&w.state, w.now_ms, (500..520).map(created).collect());
        assert!(w.apply(next).iter().all(Result::is_ok));
        let e = event(&w, &key);
        assert_eq!(e.count, Some(520));
        assert_eq!(e.message.as_deref(), Some("(combined from similar events): Created pod: web-519"));
    }

    /// The name depends on what the event says and nothing else, so a change to what goes into
    /// the hash (which would split the counts of a running cluster's events) is seen here.
    #[test]
    fn an_event_s_name_is_fixed_by_what_it_says() {
        assert_eq!(scheduled("p").event_key().name.as_str(), EXPECTED_NAME);
    }

    const EXPECTED_NAME: &str = "p.82ce24eae08ae72b";
}
