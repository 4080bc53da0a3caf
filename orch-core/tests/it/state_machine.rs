//! The state machine's rules, one behaviour per test.

use std::sync::Arc;

use orch_core::command::Preconditions;
use orch_core::core_v1::{PodPhase, PodStatus};
use orch_core::{
    Action, ApplyError, ClientId, Command, Entry, EventType, Kind, Object, ObjectKey, Request, Revision, Selector,
    State, WatchFilter,
};

use crate::fixtures::{Harness, deployment, namespace, node, obj, pod};

fn key(kind: Kind, ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(kind, ns, name)
}

fn get(h: &Harness, k: &ObjectKey) -> Object {
    h.state.get(k).cloned().unwrap_or_else(|| panic!("{k} missing"))
}

fn delete(k: &ObjectKey, grace: Option<i64>) -> Command {
    Command::Delete {
        key: k.clone(),
        grace_period_seconds: grace,
        preconditions: Preconditions::default(),
        propagation_policy: None,
    }
}

fn bind(ns: &str, name: &str, node: &str) -> Command {
    Command::Bind {
        namespace: ns.into(),
        name: name.into(),
        node: node.into(),
        preconditions: Preconditions::default(),
    }
}

fn with_meta(mut o: Object, f: impl FnOnce(&mut orch_core::ObjectMeta)) -> Object {
    f(o.meta_mut());
    o
}

#[test]
fn create_fills_system_fields_from_the_entry() {
    let mut h = Harness::new();
    let s = h.ok(Command::Create(pod("default", "web")));
    let index = h.index();
    assert_eq!(s.revision, Revision(index));
    assert_eq!(s.changes[0].action, Action::Created);
    let p = get(&h, &key(Kind::Pod, "default", "web"));
    let m = p.meta();
    assert_eq!(m.resource_version, Some(Revision(index)));
    assert_eq!(m.generation, Some(1));
    assert_eq!(m.creation_timestamp.map(|t| t.as_millis()), Some(h.now_ms));
    assert_eq!(m.uid, Some(orch_core::Uid::derive(index, 0)));
    assert_eq!(p.as_pod().and_then(|p| p.status.phase), Some(PodPhase::Pending));
    let spec = &p.as_pod().map(|p| p.spec.clone()).unwrap_or_default();
    assert_eq!(spec.termination_grace_period_seconds, Some(30), "defaults applied");
    // The first entry created the default namespace.
    let kinds: Vec<_> = h.events.iter().map(|e| (e.event_type, e.object.kind(), e.revision)).collect();
    assert_eq!(kinds, [(EventType::Added, Kind::Namespace, Revision(1)), (EventType::Added, Kind::Pod, Revision(2))]);
}

#[test]
fn create_rejects_duplicates_and_missing_namespaces() {
    let mut h = Harness::new();
    h.ok(Command::Create(pod("default", "web")));
    assert_eq!(h.err(Command::Create(pod("default", "web"))), "pods \"web\" already exists");
    assert_eq!(h.err(Command::Create(pod("nope", "web"))), "namespaces \"nope\" not found");
    h.ok(Command::Create(namespace("other")));
    h.ok(Command::Create(pod("other", "web")));
}

#[test]
fn update_bumps_generation_only_for_spec_changes() {
    let mut h = Harness::new();
    h.ok(Command::Create(deployment("web", 2, "nginx:1")));
    let k = key(Kind::Deployment, "default", "web");

    // Labels only: new revision, same generation.
    let relabeled = with_meta(deployment("web", 2, "nginx:1"), |m| {
        m.labels.insert("team", "a");
    });
    let s = h.ok(Command::Update(relabeled.clone()));
    assert_eq!(s.changes[0].action, Action::Updated);
    let d = get(&h, &k);
    assert_eq!((d.meta().generation, d.meta().resource_version), (Some(1), Some(Revision(h.index()))));

    // Spec change: generation 2.
    let scaled = with_meta(deployment("web", 5, "nginx:1"), |m| {
        m.labels.insert("team", "a");
    });
    h.ok(Command::Update(scaled.clone()));
    assert_eq!(get(&h, &k).meta().generation, Some(2));

    // The same object again: unchanged, no event, no new revision.
    let rv = get(&h, &k).meta().resource_version;
    let events = h.events.len();
    let s = h.ok(Command::Update(scaled));
    assert_eq!(s.changes[0].action, Action::Unchanged);
    assert_eq!(h.events.len(), events);
    assert_eq!(get(&h, &k).meta().resource_version, rv);
}

#[test]
fn apply_creates_then_updates_then_changes_nothing() {
    let mut h = Harness::new();
    let s = h.ok(Command::Apply(deployment("web", 2, "nginx:1")));
    assert_eq!(s.changes[0].action, Action::Created);
    let s = h.ok(Command::Apply(deployment("web", 3, "nginx:1")));
    assert_eq!(s.changes[0].action, Action::Updated);
    assert_eq!(get(&h, &key(Kind::Deployment, "default", "web")).meta().generation, Some(2));
    let s = h.ok(Command::Apply(deployment("web", 3, "nginx:1")));
    assert_eq!(s.changes[0].action, Action::Unchanged);
    // As an update it keeps the update's rules: a stale resourceVersion is a conflict.
    let stale = with_meta(deployment("web", 4, "nginx:1"), |m| m.resource_version = Some(Revision(1)));
    assert!(h.err(Command::Apply(stale)).starts_with("Operation cannot be fulfilled"));
    // An atomic batch of applies: one bad object and nothing is written.
    let before = h.state.len();
    let bad = deployment("broken", -1, "nginx:1");
    let e = h.err(Command::Batch(vec![Command::Apply(pod("default", "new")), Command::Apply(bad)]));
    assert!(e.starts_with("batch command 1: Deployment \"broken\" is invalid: spec.replicas"), "{e}");
    assert_eq!(h.state.len(), before);
}

#[test]
fn update_with_a_stale_resource_version_is_a_conflict() {
    let mut h = Harness::new();
    h.ok(Command::Create(deployment("web", 1, "nginx:1")));
    let created_rv = h.index();
    h.ok(Command::Update(deployment("web", 2, "nginx:1")));
    let stale = with_meta(deployment("web", 3, "nginx:1"), |m| m.resource_version = Some(Revision(created_rv)));
    assert_eq!(
        h.err(Command::Update(stale)),
        "Operation cannot be fulfilled on deployments \"web\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let current = with_meta(deployment("web", 3, "nginx:1"), |m| m.resource_version = Some(Revision(created_rv + 1)));
    h.ok(Command::Update(current));
    assert_eq!(h.err(Command::Update(deployment("gone", 1, "x"))), "deployments \"gone\" not found");
}

#[test]
fn update_status_keeps_the_spec_and_update_keeps_the_status() {
    let mut h = Harness::new();
    h.ok(Command::Create(pod("default", "p")));
    let k = key(Kind::Pod, "default", "p");
    let mut running = get(&h, &k);
    if let Object::Pod(p) = &mut running {
        let p = Arc::make_mut(p);
        p.status =
            PodStatus { phase: Some(PodPhase::Running), pod_ip: Some("10.0.0.5".into()), ..PodStatus::default() };
        p.spec.containers[0].image = "ignored:by-update-status".into();
    }
    h.ok(Command::UpdateStatus(running));
    let stored = get(&h, &k);
    let p = stored.as_pod().cloned().unwrap_or_default();
    assert_eq!(p.status.phase, Some(PodPhase::Running));
    assert_eq!(p.spec.containers[0].image, "busybox:1.36");
    assert_eq!(p.metadata.generation, Some(1));

    // A plain update of the image keeps the reported status.
    let mut new_image = pod("default", "p");
    if let Object::Pod(p) = &mut new_image {
        Arc::make_mut(p).spec.containers[0].image = "busybox:1.37".into();
    }
    h.ok(Command::Update(new_image));
    let p = get(&h, &k).as_pod().cloned().unwrap_or_default();
    assert_eq!(p.status.pod_ip.as_deref(), Some("10.0.0.5"));
    assert_eq!(p.metadata.generation, Some(2));
}

#[test]
fn immutable_fields_are_refused() {
    let mut h = Harness::new();
    h.ok(Command::Create(pod("default", "p")));
    let mut changed = pod("default", "p");
    if let Object::Pod(p) = &mut changed {
        Arc::make_mut(p).spec.containers[0].command = vec!["true".into()];
    }
    let e = h.err(Command::Update(changed));
    assert!(e.starts_with("Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields"), "{e}");

    h.ok(Command::Create(deployment("web", 1, "nginx:1")));
    let mut reselected = deployment("web", 1, "nginx:1");
    if let Object::Deployment(d) = &mut reselected {
        let d = Arc::make_mut(d);
        d.spec.selector.match_labels.insert("tier", "x");
        d.spec.template.metadata.labels.insert("tier", "x");
    }
    let e = h.err(Command::Update(reselected));
    assert!(e.contains("spec.selector: Invalid value: \"app=web,tier=x\": field is immutable"), "{e}");
}

#[test]
fn unbound_pods_are_deleted_at_once() {
    let mut h = Harness::new();
    h.ok(Command::Create(pod("default", "p")));
    let k = key(Kind::Pod, "default", "p");
    let s = h.ok(delete(&k, None));
    assert_eq!(s.changes[0].action, Action::Deleted);
    assert!(h.state.get(&k).is_none());
    let last = h.events.last().cloned().unwrap_or_else(|| panic!("no event"));
    assert_eq!(last.event_type, EventType::Deleted);
    assert_eq!(last.object.meta().resource_version, Some(Revision(h.index())), "Deleted carries the deletion revision");
    assert_eq!(h.err(delete(&k, None)), "pods \"p\" not found");
}

#[test]
fn bound_pods_are_deleted_gracefully() {
    let mut h = Harness::new();
    h.ok(Command::Create(node("n1")));
    h.ok(Command::Create(pod("default", "p")));
    h.ok(bind("default", "p", "n1"));
    let k = key(Kind::Pod, "default", "p");
    let generation = get(&h, &k).meta().generation;
    assert_eq!(generation, Some(2), "binding set spec.nodeName");
    let s = h.ok(delete(&k, None));
    assert_eq!(s.changes[0].action, Action::Deleting);
    let m = get(&h, &k).meta().clone();
    assert_eq!(m.deletion_grace_period_seconds, Some(30));
    assert_eq!(m.deletion_timestamp.map(|t| t.as_millis()), Some(h.now_ms + 30_000));
    assert!(h.events.last().is_some_and(|e| e.event_type == EventType::Modified));
    assert_eq!(m.generation, generation, "deletion is not a spec change");
    // Deleting again with the same grace changes nothing; a shorter grace shortens it.
    assert_eq!(h.ok(delete(&k, None)).changes[0].action, Action::Unchanged);
    assert_eq!(h.ok(delete(&k, Some(5))).changes[0].action, Action::Deleting);
    assert_eq!(get(&h, &k).meta().deletion_grace_period_seconds, Some(5));
    // Creating a new pod under that name waits for the old one to go.
    assert_eq!(h.err(Command::Create(pod("default", "p"))), "pods \"p\" already exists");
    // The node agent confirms the stop with grace 0.
    assert_eq!(h.ok(delete(&k, Some(0))).changes[0].action, Action::Deleted);
    assert!(h.state.get(&k).is_none());
    assert_eq!(
        h.err(delete(&k, Some(-1))),
        "bad request: gracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0"
    );
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let mut h = Harness::new();
    let guarded = with_meta(deployment("web", 1, "nginx:1"), |m| m.finalizers = vec!["example.com/guard".into()]);
    h.ok(Command::Create(guarded.clone()));
    let k = key(Kind::Deployment, "default", "web");
    assert_eq!(h.ok(delete(&k, None)).changes[0].action, Action::Deleting);
    assert!(get(&h, &k).meta().deletion_timestamp.is_some());
    let e = h.err(Command::Update(with_meta(guarded, |m| m.finalizers.push("example.com/more".into()))));
    assert!(e.contains("no new finalizers can be added if the object is being deleted"), "{e}");
    let s = h.ok(Command::Update(deployment("web", 1, "nginx:1")));
    let actions: Vec<_> = s.changes.iter().map(|c| c.action).collect();
    assert_eq!(actions, [Action::Updated, Action::Deleted]);
    assert!(h.state.get(&k).is_none());
}

#[test]
fn namespaces_terminate_when_emptied() {
    let mut h = Harness::new();
    h.ok(Command::Create(namespace("team")));
    h.ok(Command::Create(pod("team", "a")));
    let ns = key(Kind::Namespace, "", "team");
    assert_eq!(h.ok(delete(&ns, None)).changes[0].action, Action::Deleting);
    let phase = match get(&h, &ns) {
        Object::Namespace(n) => n.status.phase,
        _ => None,
    };
    assert_eq!(phase, Some(orch_core::core_v1::NamespacePhase::Terminating));
    let e = h.err(Command::Create(pod("team", "b")));
    assert_eq!(
        e,
        "namespaces \"team\" is forbidden: unable to create new content in namespace team because it is being terminated"
    );
    let s = h.ok(delete(&key(Kind::Pod, "team", "a"), None));
    assert_eq!(s.changes.iter().map(|c| c.key.kind).collect::<Vec<_>>(), [Kind::Pod, Kind::Namespace]);
    assert!(h.state.get(&ns).is_none());
    assert_eq!(
        h.err(delete(&key(Kind::Namespace, "", "default"), None)),
        "namespaces \"default\" is forbidden: this namespace may not be deleted"
    );
}

#[test]
fn bind_sets_the_node_once() {
    let mut h = Harness::new();
    h.ok(Command::Create(node("n1")));
    h.ok(Command::Create(node("n2")));
    h.ok(Command::Create(pod("default", "p")));
    assert_eq!(h.err(bind("default", "p", "n9")), "nodes \"n9\" not found");
    h.ok(bind("default", "p", "n1"));
    let p = get(&h, &key(Kind::Pod, "default", "p")).as_pod().cloned().unwrap_or_default();
    assert_eq!(p.spec.node_name.as_deref(), Some("n1"));
    assert!(p.status.conditions.iter().any(|c| c.type_ == "PodScheduled"));
    assert_eq!(h.ok(bind("default", "p", "n1")).changes[0].action, Action::Unchanged);
    assert_eq!(
        h.err(bind("default", "p", "n2")),
        "Operation cannot be fulfilled on pods \"p\": pod p is already assigned to node \"n1\""
    );
    assert_eq!(h.err(bind("default", "q", "n1")), "pods \"q\" not found");
}

#[test]
fn a_failed_batch_applies_nothing() {
    let mut h = Harness::new();
    h.ok(Command::Create(pod("default", "taken")));
    let batch =
        Command::Batch(vec![Command::Create(pod("default", "fresh")), Command::Create(pod("default", "taken"))]);
    assert_eq!(h.err(batch), "batch command 1: pods \"taken\" already exists");
    assert!(h.state.get(&key(Kind::Pod, "default", "fresh")).is_none());
    let nested = Command::Batch(vec![Command::Batch(vec![])]);
    assert_eq!(h.err(nested), "batch command 0: bad request: a batch may not contain a batch");
    let s = h.ok(Command::Batch(vec![Command::Create(pod("default", "x")), Command::Create(pod("default", "y"))]));
    assert_eq!(s.changes.len(), 2);
}

#[test]
fn a_retried_request_returns_its_first_outcome() {
    let mut h = Harness::new();
    let request = Request::new(ClientId(9), 1, Command::Create(pod("default", "p")));
    let first = h.run_requests(vec![request.clone()]);
    let events = h.events.len();
    let again = h.run_requests(vec![request.clone(), request]);
    assert_eq!(again, [first[0].clone(), first[0].clone()], "not 'already exists': the first outcome");
    assert_eq!(h.events.len(), events, "applied once");
    // Another client with the same serial is a different request.
    let other = Request::new(ClientId(10), 1, Command::Create(pod("default", "p")));
    assert!(matches!(h.run_requests(vec![other])[0], Err(ApplyError::AlreadyExists { .. })));
}

#[test]
fn serials_older_than_the_window_are_refused() {
    let mut h = Harness::new();
    let window = orch_core::sessions::SESSION_OUTCOMES_MAX as u64;
    let requests: Vec<_> = (1..=window + 1)
        .map(|serial| Request {
            client: ClientId(3),
            serial,
            acked_below: 0,
            retry: false,
            command: Command::Create(pod("default", &format!("p{serial}"))),
        })
        .collect();
    h.run_requests(requests);
    let old = Request::new(ClientId(3), 1, Command::Create(pod("default", "p1")));
    let out = h.run_requests(vec![old]);
    assert_eq!(out[0], Err(ApplyError::StaleRequest { client: ClientId(3), serial: 1 }));
    let recent = Request::new(ClientId(3), 2, Command::Create(pod("default", "zzz")));
    assert!(h.run_requests(vec![recent])[0].is_ok(), "serial 2 is still remembered: its first outcome");
    assert!(h.state.get(&key(Kind::Pod, "default", "zzz")).is_none());
}

/// Concurrent callers of one client: their requests reach the log in any order. Each says the
/// lowest serial its client still awaits a reply for, and the table forgets only outcomes below
/// it: a request that arrives after 600 later ones is applied, once.
#[test]
fn a_request_that_reaches_the_log_after_many_later_ones_is_applied_once() {
    let mut h = Harness::new();
    let request = |serial: u64, acked_below: u64, name: &str| Request {
        client: ClientId(5),
        serial,
        acked_below,
        retry: false,
        command: Command::Create(pod("default", name)),
    };
    // Serial 1 still awaits its reply while 2..=600 are applied.
    let later: Vec<_> = (2..=600).map(|serial| request(serial, 1, &format!("p{serial}"))).collect();
    assert!(h.run_requests(later).iter().all(Result::is_ok));
    let first = h.run_requests(vec![request(1, 1, "p1")]);
    assert!(first[0].is_ok(), "applied, not stale: {:?}", first[0]);
    let events = h.events.len();
    assert_eq!(h.run_requests(vec![request(1, 1, "p1")]), first, "a retry gets the first outcome");
    assert_eq!(h.events.len(), events, "applied once");
    // Once the client says it has every reply below 601, those outcomes go, and a late retry of
    // one is stale rather than applied again.
    assert!(h.run_requests(vec![request(601, 601, "p601")])[0].is_ok());
    assert_eq!(
        h.run_requests(vec![request(1, 601, "p1")])[0],
        Err(ApplyError::StaleRequest { client: ClientId(5), serial: 1 })
    );
    assert_eq!(
        h.run_requests(vec![request(600, 601, "p600")])[0],
        Err(ApplyError::StaleRequest { client: ClientId(5), serial: 600 })
    );
}

/// A client may have at most SESSION_PENDING_MAX serials awaiting replies, and cannot claim the
/// reply of a request it is sending: such requests are refused, not applied and not recorded.
#[test]
fn a_client_with_too_many_requests_awaiting_replies_is_refused() {
    let mut h = Harness::new();
    let max = orch_core::sessions::SESSION_PENDING_MAX;
    let request = |serial: u64, acked_below: u64| Request {
        client: ClientId(6),
        serial,
        acked_below,
        retry: false,
        command: Command::Create(pod("default", &format!("q{serial}"))),
    };
    assert!(h.run_requests(vec![request(max, 1)])[0].is_ok(), "max - 1 past the lowest awaiting");
    let out = h.run_requests(vec![request(max + 1, 1), request(5, 6)]);
    let reasons: Vec<String> = out.iter().map(|o| o.as_ref().expect_err("refused").to_string()).collect();
    assert_eq!(
        reasons,
        [
            format!(
                "bad request: serial {} is {max} past the lowest awaiting a reply (1); at most {max} may await replies",
                max + 1
            ),
            "bad request: ackedBelow 6 is above the request's own serial 5".to_owned(),
        ]
    );
    assert!(h.state.get(&key(Kind::Pod, "default", &format!("q{}", max + 1))).is_none());
    // Not recorded: sent again once the window moved, it is applied.
    assert!(h.run_requests(vec![request(max + 1, 2)])[0].is_ok());
}

/// A client that mixes requests that tell (`acked_below` > 0) with ones that do not keeps at most
/// SESSION_PENDING_MAX outcomes: the table stays within its invariants (checked after every
/// entry by the harness), so snapshots of it load.
#[test]
fn a_client_mixing_old_and_new_requests_stays_within_the_table_s_bounds() {
    let mut h = Harness::new();
    let request = |serial: u64, acked_below: u64| Request {
        client: ClientId(8),
        serial,
        acked_below,
        retry: false,
        command: Command::Create(pod("default", &format!("m{serial}"))),
    };
    let old: Vec<_> = (1_000_000..1_000_256).map(|serial| request(serial, 0)).collect();
    h.run_requests(old);
    let new: Vec<_> = (1..=1024).map(|serial| request(serial, 1)).collect();
    assert!(h.run_requests(new).iter().all(Result::is_ok));
    let state = orch_core::State::from_snapshot(&h.state.to_snapshot()).expect("the snapshot loads");
    assert_eq!(state, h.state);
}

#[test]
fn idle_sessions_expire_by_entry_time() {
    let mut h = Harness::new();
    h.run_requests(vec![Request::new(ClientId(4), 1, Command::Create(pod("default", "a")))]);
    assert_eq!(h.state.sessions().len(), 1);
    h.now_ms += orch_core::sessions::SESSION_IDLE_MS_MAX + 1;
    h.run_requests(vec![]);
    assert_eq!(h.state.sessions().len(), 0);
}

#[test]
fn generated_names_derive_from_the_index() {
    let make = || {
        let mut h = Harness::new();
        let generated = with_meta(pod("default", "x"), |m| {
            m.name = orch_core::Text::new();
            m.generate_name = Some("web-".into());
        });
        h.ok(Command::Create(generated.clone()));
        h.ok(Command::Create(generated));
        h.state.list(Kind::Pod, Some("default")).map(|p| p.meta().name.clone()).collect::<Vec<_>>()
    };
    let names = make();
    assert_eq!(names.len(), 2);
    assert!(names.iter().all(|n| n.starts_with("web-") && n.len() == 9), "{names:?}");
    assert_eq!(names, make(), "deterministic");
}

#[test]
fn watch_filters_translate_selection_changes() {
    let mut h = Harness::new();
    h.ok(Command::Create(node("n1")));
    h.ok(Command::Create(pod("default", "p")));
    h.ok(bind("default", "p", "n1"));
    let relabeled = with_meta(pod("default", "p"), |m| {
        m.labels.insert("app", "other");
    });
    h.ok(Command::Update(relabeled));
    h.ok(delete(&key(Kind::Pod, "default", "p"), Some(0)));

    let by_node = WatchFilter { node_name: Some("n1".into()), ..WatchFilter::default() };
    let seen: Vec<_> = h.events.iter().filter_map(|e| by_node.view(e)).map(|e| e.event_type).collect();
    assert_eq!(seen, [EventType::Added, EventType::Modified, EventType::Deleted], "the bind is the agent's Added");

    let by_label = WatchFilter {
        kind: Some(Kind::Pod),
        labels: "app=web".parse::<Selector>().unwrap_or_default(),
        ..WatchFilter::default()
    };
    let seen: Vec<_> = h.events.iter().filter_map(|e| by_label.view(e)).map(|e| e.event_type).collect();
    assert_eq!(seen, [EventType::Added, EventType::Modified, EventType::Deleted], "relabel leaves the selection");

    let other_ns = WatchFilter { namespace: Some("kube-system".into()), ..WatchFilter::default() };
    assert_eq!(h.events.iter().filter_map(|e| other_ns.view(e)).count(), 0);
}

#[test]
fn the_clock_never_goes_back() {
    let mut state = State::new();
    state.apply(1, Entry::new(5_000, vec![]));
    state.apply(2, Entry::new(1_000, vec![]));
    assert_eq!(state.clock().as_millis(), 5_000);
}

#[test]
#[should_panic(expected = "must be applied in log order")]
fn applying_an_old_index_is_a_broken_invariant() {
    let mut state = State::new();
    state.apply(2, Entry::default());
    state.apply(2, Entry::default());
}

#[test]
fn snapshots_refuse_damaged_bytes() {
    let mut h = Harness::new();
    h.ok(Command::Create(pod("default", "p")));
    let bytes = h.state.to_snapshot();
    assert_eq!(State::from_snapshot(&bytes).as_ref().ok(), Some(&h.state));
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(State::from_snapshot(&flipped), Err(orch_core::SnapshotError::Digest));
    assert!(State::from_snapshot(&bytes[..bytes.len() - 1]).is_err());
    assert!(State::from_snapshot(&bytes[..10]).is_err());
    assert!(State::from_snapshot(b"").is_err());
    let mut version = bytes.clone();
    version[8] = 99;
    assert_eq!(State::from_snapshot(&version), Err(orch_core::SnapshotError::Version(99)));
}

/// A snapshot with a valid header around a payload that claims 2^40 objects.
#[test]
fn a_crafted_length_is_refused_without_allocating_it() {
    let mut payload = vec![1, 0, 0]; // applied index 1, clock 0, not bootstrapped
    payload.push(253); // varint marker: a u64 follows
    payload.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let mut bytes = b"ORCHSNAP".to_vec();
    bytes.push(orch_core::codec::FORMAT_VERSION);
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(blake3::hash(&payload).as_bytes());
    bytes.extend_from_slice(&payload);
    let err = State::from_snapshot(&bytes).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.starts_with("malformed snapshot"), "{err}");

    let mut entry = vec![orch_core::codec::FORMAT_VERSION, 0, 253];
    entry.extend_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(orch_core::codec::decode_entry(&entry).is_err());
}

#[test]
fn entries_round_trip_and_garbage_is_an_error() {
    let entry = Entry::new(
        42,
        vec![Request::new(
            ClientId(1),
            7,
            Command::Create(obj(include_str!("../../../examples/web.yaml").split("---").nth(1).unwrap_or_default())),
        )],
    );
    let bytes = orch_core::codec::encode_entry(&entry).expect("encodes");
    assert_eq!(orch_core::codec::decode_entry(&bytes).as_ref(), Ok(&entry));
    assert!(orch_core::codec::decode_entry(&bytes[..bytes.len() / 2]).is_err());
    assert!(orch_core::codec::decode_entry(&[]).is_err());
    assert!(orch_core::codec::decode_entry(&[orch_core::codec::FORMAT_VERSION, 0xff, 0xff, 0xff]).is_err());
}

/// The encoder refuses what the decoder would: an entry over its byte limit, and one whose
/// decoding claims more memory than the budget its length allows (400,000 empty arguments:
/// 400 KB of input claiming 9.6 MB). Without the check the second became an entry every
/// replica refused to decode.
#[test]
fn the_encoder_refuses_what_the_decoder_would() {
    let mut pod = pod("default", "p");
    let orch_core::Object::Pod(p) = &mut pod else { unreachable!("a pod") };
    std::sync::Arc::make_mut(p).spec.containers[0].args = vec![orch_core::Text::new(); 400_000];
    let request = |command| Request { client: ClientId(1), serial: 1, acked_below: 0, retry: false, command };
    let entry = Entry::new(1, vec![request(Command::Create(pod.clone()))]);
    assert!(orch_core::codec::decode_entry(&orch_core::codec::encode(&entry)).is_err());
    let err = orch_core::codec::encode_entry(&entry).expect_err("refused");
    assert!(err.to_string().contains("the entry would not decode"), "{err}");

    let blob = "v".repeat(200_000);
    let big = obj(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, annotations: {{a: {blob}}}}}\nspec: {{containers: [{{name: c, image: x}}]}}"
    ));
    let requests = (0..25).map(|_| request(Command::Create(big.clone()))).collect();
    let entry = Entry::new(1, requests);
    let err = orch_core::codec::encode_entry(&entry).expect_err("refused");
    assert!(matches!(err, orch_core::codec::CodecError::TooLarge { max: orch_core::codec::ENTRY_BYTES_MAX, .. }));
}

/// The state and what it hands out cross threads: the Raft layer applies on one task and
/// serves reads and watches on others.
#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<State>();
    assert_send_sync::<Object>();
    assert_send_sync::<Entry>();
    assert_send_sync::<orch_core::ApplyOutput>();
    assert_send_sync::<orch_core::WatchEvent>();
    assert_send_sync::<orch_core::WatchFilter>();
    assert_send_sync::<ApplyError>();
}

/// The largest valid objects are stored: an Endpoints with `ENDPOINT_ADDRESSES_MAX` addresses
/// (its decoding claims 1.16 MB from 60 KB; with a 1 MiB floor every replica refused it), and
/// an entry of `ENTRY_REQUESTS_MAX` requests.
#[test]
fn the_largest_valid_lists_encode_and_decode() {
    let max = orch_core::validation::ENDPOINT_ADDRESSES_MAX;
    let endpoints = |not_ready: usize| {
        let mut e = obj("apiVersion: v1\nkind: Endpoints\nmetadata: {name: e}\n");
        let orch_core::Object::Endpoints(ep) = &mut e else { unreachable!("endpoints") };
        let a = orch_core::core_v1::EndpointAddress { ip: "10.1.2.3".into(), ..Default::default() };
        std::sync::Arc::make_mut(ep).subsets = vec![orch_core::core_v1::EndpointSubset {
            addresses: vec![a.clone(); max],
            not_ready_addresses: vec![a; not_ready],
            ..Default::default()
        }];
        orch_core::apply_defaults(&mut e);
        assert_eq!(orch_core::validate(&e), orch_core::FieldErrors::default());
        e
    };
    let alone = Entry::new(1, vec![Request::new(ClientId(1), 1, Command::Create(endpoints(0)))]);
    let bytes = orch_core::codec::encode_entry(&alone).expect("a valid entry encodes");
    assert_eq!(orch_core::codec::decode_entry(&bytes).as_ref(), Ok(&alone));
    let mut requests = vec![Request::new(ClientId(1), 1, Command::Create(endpoints(max)))];
    requests.extend((1..orch_core::command::ENTRY_REQUESTS_MAX).map(|i| {
        Request::new(
            ClientId(1),
            i as u64 + 1,
            Command::Delete {
                key: orch_core::ObjectKey::new(orch_core::Kind::Pod, "default", "x"),
                grace_period_seconds: None,
                preconditions: Default::default(),
                propagation_policy: None,
            },
        )
    }));
    let entry = Entry::new(1, requests);
    let bytes = orch_core::codec::encode_entry(&entry).expect("a valid entry encodes");
    assert_eq!(orch_core::codec::decode_entry(&bytes).as_ref(), Ok(&entry));
}

fn replicas(h: &Harness, k: &ObjectKey) -> Option<i32> {
    match get(h, k) {
        Object::Deployment(d) => d.spec.replicas,
        Object::ReplicaSet(rs) => rs.spec.replicas,
        other => panic!("{k} is a {}", other.kind()),
    }
}

#[test]
fn scale_sets_replicas_on_the_object_as_it_is_and_a_retry_cannot_undo_a_later_scale() {
    let mut h = Harness::new();
    h.ok(Command::Create(deployment("web", 1, "nginx:1")));
    let web = key(Kind::Deployment, "default", "web");
    // An update in between changes the resourceVersion: a scale needs none, so it cannot conflict.
    h.ok(Command::Update(deployment("web", 1, "nginx:2")));
    let scale = |replicas| Request {
        client: ClientId(9),
        serial: 1,
        acked_below: 1,
        retry: false,
        command: Command::Scale { key: web.clone(), replicas },
    };
    let first = h.run_requests(vec![scale(3)]);
    assert!(matches!(&first[0], Ok(s) if s.changes[0].action == Action::Updated), "{first:?}");
    assert_eq!(replicas(&h, &web), Some(3));
    let generation = get(&h, &web).meta().generation;
    assert_eq!(generation, Some(3), "a new spec: a new generation");
    let image = |h: &Harness| match get(h, &web) {
        Object::Deployment(d) => d.spec.template.spec.containers[0].image.to_string(),
        _ => unreachable!("a deployment"),
    };
    assert_eq!(image(&h), "nginx:2", "the rest of the spec is kept");
    // Another client scales to 5; the first client's retry (same serial) gets its first outcome.
    h.run_requests(vec![Request {
        client: ClientId(10),
        serial: 1,
        acked_below: 1,
        retry: false,
        command: Command::Scale { key: web.clone(), replicas: 5 },
    }]);
    assert_eq!(h.run_requests(vec![scale(3)]), first);
    assert_eq!(replicas(&h, &web), Some(5), "the retry did not overwrite the later scale");

    assert!(h.err(Command::Scale { key: web.clone(), replicas: -1 }).contains("spec.replicas: Invalid value: -1"));
    let pod_key = key(Kind::Pod, "default", "p");
    assert!(h.err(Command::Scale { key: pod_key, replicas: 1 }).contains("key.kind: Unsupported value: \"Pod\""));
    let missing = key(Kind::ReplicaSet, "default", "none");
    assert_eq!(h.err(Command::Scale { key: missing, replicas: 1 }), "replicasets \"none\" not found");
}

/// A ReplicaSet controlled by the deployment `web` (uid `uid`) at `revision`, with `image`.
fn revision_of_web(uid: &str, revision: u32, image: &str) -> Object {
    obj(&format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-r{revision}\n  \
         annotations: {{deployment.kubernetes.io/revision: '{revision}'}}\n  \
         ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: web, uid: '{uid}', controller: true}}]\n\
         spec:\n  replicas: 0\n  selector: {{matchLabels: {{app: web, pod-template-hash: r{revision}}}}}\n  \
         template:\n    metadata: {{labels: {{app: web, pod-template-hash: r{revision}}}}}\n    \
         spec:\n      containers: [{{name: c, image: '{image}'}}]\n"
    ))
}

#[test]
fn rollout_undo_takes_a_replica_set_s_template_when_it_applies() {
    let mut h = Harness::new();
    h.ok(Command::Create(deployment("web", 2, "nginx:3")));
    let web = key(Kind::Deployment, "default", "web");
    let uid = get(&h, &web).meta().uid.expect("uid").to_string();
    assert_eq!(
        h.err(Command::RolloutUndo { namespace: "default".into(), name: "web".into(), to_revision: 0 }),
        "bad request: deployment \"web\" has no earlier revision to roll back to"
    );
    for (revision, image) in [(1, "nginx:1"), (2, "nginx:2"), (3, "nginx:3")] {
        h.ok(Command::Create(revision_of_web(&uid, revision, image)));
    }
    // A ReplicaSet owned by another object does not count.
    h.ok(Command::Create(revision_of_web("00000000-0000-0000-0000-000000000009", 4, "other")));
    let image = |h: &Harness| match get(h, &web) {
        Object::Deployment(d) => {
            assert!(d.spec.template.metadata.labels.get("pod-template-hash").is_none(), "the hash label is dropped");
            d.spec.template.spec.containers[0].image.to_string()
        }
        _ => unreachable!("a deployment"),
    };
    let undo = |to_revision| Command::RolloutUndo { namespace: "default".into(), name: "web".into(), to_revision };
    h.ok(undo(0));
    assert_eq!(image(&h), "nginx:2", "the revision before the newest");
    h.ok(undo(1));
    assert_eq!(image(&h), "nginx:1");
    assert_eq!(h.err(undo(7)), "bad request: toRevision: Invalid value: 7: deployment \"web\" has no such revision");
    assert_eq!(h.err(undo(-1)), "bad request: toRevision: Invalid value: -1: must be greater than or equal to 0");
    assert_eq!(replicas(&h, &web), Some(2), "only the template changes");
    // A retried undo (same client and serial) is applied once.
    let request = Request { client: ClientId(9), serial: 1, acked_below: 1, retry: false, command: undo(3) };
    let first = h.run_requests(vec![request.clone()]);
    assert_eq!(image(&h), "nginx:3");
    h.ok(undo(1));
    assert_eq!(h.run_requests(vec![request]), first);
    assert_eq!(image(&h), "nginx:1", "the retry did not roll back again");
}

/// An entry of rules this build does not apply is never applied under other rules: `apply`
/// stops (the decoder refuses such an entry before it gets there).
#[test]
fn apply_refuses_an_entry_of_rules_it_does_not_apply() {
    use orch_core::rules::{RULES_VERSION, RULES_VERSION_MIN};
    for rules in [RULES_VERSION_MIN - 1, RULES_VERSION + 1] {
        let panic = std::panic::catch_unwind(|| {
            State::new().apply(1, Entry { rules, ..Entry::new(1, Vec::new()) });
        })
        .expect_err("refused");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        let expected = format!(
            "entry 1 is of rules version {rules}, and this build applies {RULES_VERSION_MIN} to {RULES_VERSION}"
        );
        assert_eq!(message, expected);
    }
}

/// A retry from a client the table no longer knows (idle past `SESSION_IDLE_MS_MAX`) is answered
/// "session expired, outcome unknown" and not applied: its first attempt may have been. A first
/// attempt from the same client starts a new session and is applied.
#[test]
fn a_retry_from_an_expired_session_is_not_applied_again() {
    let mut state = State::new();
    let ns = |name: &str| Command::Create(namespace(name));
    let request = |serial, retry, command| Request { client: ClientId(7), serial, acked_below: serial, retry, command };
    let t0 = 1_800_000_000_000;
    let out = state.apply(1, Entry::new(t0, vec![request(1, false, ns("a"))]));
    assert!(out.outcomes[0].is_ok());
    // Known: a retry gets the first outcome.
    let again = state.apply(2, Entry::new(t0 + 1, vec![request(1, true, ns("a"))]));
    assert_eq!(again.outcomes, out.outcomes);
    // Client 7 idles past the bound (another client's entry moves the clock): forgotten.
    let later = t0 + orch_core::sessions::SESSION_IDLE_MS_MAX + 10;
    state.apply(3, Entry::new(later, vec![Request::new(ClientId(8), 1, ns("other"))]));
    assert_eq!(state.sessions().len(), 1, "client 7 forgotten");
    state.apply(
        4,
        Entry::new(
            later + 1,
            vec![Request {
                client: ClientId(9),
                serial: 1,
                acked_below: 1,
                retry: false,
                command: Command::Delete {
                    key: ObjectKey::new(Kind::Namespace, "", "a"),
                    grace_period_seconds: Some(0),
                    preconditions: Preconditions::default(),
                    propagation_policy: None,
                },
            }],
        ),
    );
    assert!(state.get(&ObjectKey::new(Kind::Namespace, "", "a")).is_none(), "deleted");
    let expired = state.apply(5, Entry::new(later + 2, vec![request(1, true, ns("a"))]));
    assert_eq!(expired.outcomes, vec![Err(orch_core::ApplyError::SessionExpired { client: ClientId(7), serial: 1 })]);
    assert!(state.get(&ObjectKey::new(Kind::Namespace, "", "a")).is_none(), "not applied a second time");
    assert!(expired.events.is_empty());
    // Rules 2 recorded the answer: the first attempt, had it still been on its way, is not
    // applied after the client was told the outcome is unknown.
    let late = state.apply(6, Entry::new(later + 3, vec![request(1, false, ns("a"))]));
    assert_eq!(late.outcomes, expired.outcomes);
    assert!(state.get(&ObjectKey::new(Kind::Namespace, "", "a")).is_none());
    // A first attempt of a new serial is applied.
    let fresh = state.apply(7, Entry::new(later + 4, vec![request(2, false, ns("a"))]));
    assert!(fresh.outcomes[0].is_ok(), "{:?}", fresh.outcomes);
}

/// Entries keep the rules they were written under: the same requests stamped rules 1 (format 4
/// builds) get rules 1's answers, where "session expired" was not recorded and a session did not
/// remember the serial that opened it.
#[test]
fn entries_of_rules_1_are_applied_under_rules_1() {
    let ns = |name: &str| Command::Create(namespace(name));
    let request = |serial, retry, command| Request { client: ClientId(7), serial, acked_below: 1, retry, command };
    let run = |rules: u16| {
        let mut state = State::new();
        let entry = |t: i64, requests| Entry { rules, ..Entry::new(1_800_000_000_000 + t, requests) };
        let expired = state.apply(1, entry(0, vec![request(2, true, ns("a"))])).outcomes;
        let late = state.apply(2, entry(1, vec![request(2, false, ns("a"))])).outcomes;
        let below = state.apply(3, entry(2, vec![request(1, true, ns("b"))])).outcomes;
        (expired, late, below)
    };
    let unknown = |serial| Err(ApplyError::SessionExpired { client: ClientId(7), serial });
    let (expired, late, below) = run(1);
    assert_eq!(expired, [unknown(2)]);
    assert!(late[0].is_ok(), "rules 1: not recorded, so a late first attempt is applied");
    assert!(below[0].is_ok(), "rules 1: no opening serial, so a retry below it is applied");
    let (expired, late, below) = run(2);
    assert_eq!((expired, late, below), (vec![unknown(2)], vec![unknown(2)], vec![unknown(1)]));
}

/// After a client's session is lost, every retry of its writes in flight is answered "unknown",
/// whichever reaches the log first: the first one's recorded answer opens a session that holds
/// no record of the others.
#[test]
fn after_a_session_is_lost_every_retry_in_flight_is_unknown() {
    let ns = |name: &str| Command::Create(namespace(name));
    let request = |serial, retry, command| Request { client: ClientId(7), serial, acked_below: 5, retry, command };
    let key = |name: &str| ObjectKey::new(Kind::Namespace, "", name);
    let t0 = 1_800_000_000_000;
    let mut state = State::new();
    let first = state.apply(1, Entry::new(t0, vec![request(5, false, ns("a")), request(6, false, ns("b"))]));
    assert!(first.outcomes.iter().all(Result::is_ok), "{:?}", first.outcomes);
    // The replies are lost; the session idles out; someone deletes both.
    let later = t0 + orch_core::sessions::SESSION_IDLE_MS_MAX + 10;
    let delete = |serial, name: &str| Request {
        client: ClientId(9),
        serial,
        acked_below: serial,
        retry: false,
        command: Command::Delete {
            key: key(name),
            grace_period_seconds: Some(0),
            preconditions: Preconditions::default(),
            propagation_policy: None,
        },
    };
    state.apply(2, Entry::new(later, vec![delete(1, "a"), delete(2, "b")]));
    let unknown = |serial| Err(ApplyError::SessionExpired { client: ClientId(7), serial });
    let retried = state.apply(3, Entry::new(later + 1, vec![request(5, true, ns("a")), request(6, true, ns("b"))]));
    assert_eq!(retried.outcomes, [unknown(5), unknown(6)]);
    assert!(state.get(&key("a")).is_none() && state.get(&key("b")).is_none(), "neither applied twice");
}
