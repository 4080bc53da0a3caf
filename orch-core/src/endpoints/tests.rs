//! The endpoints controller over a state whose pods are given IPs and readiness by hand.

use super::*;
use crate::core_v1::PodCondition;
use crate::reconcile::world::World;
use crate::time::Time;

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, labels: {app: web}}\nspec:\n  \
                       selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}, {name: raw, port: 81, targetPort: 9000}]\n";

fn pod(name: &str, port_name: &str, port: i32) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\nspec:\n  nodeName: n1\n  \
         containers: [{{name: c, image: x, ports: [{{name: {port_name}, containerPort: {port}}}]}}]\n"
    )
}

/// Gives pod `name` an IP, Running, and Ready as `ready` says.
fn run(w: &mut World, name: &str, ip: &str, ready: bool) -> Vec<ObjectKey> {
    let mut p = w.pod(name);
    p.status.phase = Some(PodPhase::Running);
    p.status.pod_ip = Some(ip.into());
    p.status.conditions.retain(|c| c.type_ != "Ready");
    let status = if ready { ConditionStatus::True } else { ConditionStatus::False };
    p.status.conditions.push(PodCondition::new("Ready", status, Time::from_millis(w.now_ms)));
    w.run(vec![Command::UpdateStatus(Object::from(p))]).1
}

fn endpoints(w: &World) -> Option<Endpoints> {
    match w.state.get(&ObjectKey::new(Kind::Endpoints, "default", "web")) {
        Some(Object::Endpoints(e)) => Some((**e).clone()),
        _ => None,
    }
}

/// A subset in short: (ports, ready pod names, not-ready pod names).
type Subset = (Vec<(String, i32)>, Vec<String>, Vec<String>);

/// Each subset in short.
fn summary(e: &Endpoints) -> Vec<Subset> {
    let names = |a: &[EndpointAddress]| {
        a.iter().map(|a| a.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default().to_string()).collect()
    };
    e.subsets
        .iter()
        .map(|s| {
            let ports = s.ports.iter().map(|p| (p.name.clone().unwrap_or_default().to_string(), p.port)).collect();
            (ports, names(&s.addresses), names(&s.not_ready_addresses))
        })
        .collect()
}

/// Ready pods under `addresses`, the others under `notReadyAddresses`, named ports resolved per
/// pod (pods with different ports in different subsets); a terminating pod leaves at once; a
/// pod without an IP is not listed; a deleted Service's Endpoints go.
#[test]
fn a_service_lists_its_pods_by_readiness_with_ports_resolved_per_pod() {
    let mut w = World::with(SERVICE);
    let mut c = EndpointsController::new();
    let mut changed =
        w.create(&(pod("a", "http", 8080) + "---\n" + &pod("b", "http", 8080) + "---\n" + &pod("c", "http", 9090)));
    changed.extend(w.create(&pod("d", "http", 8080)));
    changed.extend(run(&mut w, "a", "10.1.0.1", true));
    changed.extend(run(&mut w, "b", "10.1.0.2", false));
    changed.extend(run(&mut w, "c", "10.1.0.3", true));
    let services = w.state.list(Kind::Service, None).map(Object::key).collect::<Vec<_>>();
    changed.extend(services);
    w.settle(&mut c, changed);
    let e = endpoints(&w).expect("created");
    let http_raw = |http: i32| vec![("http".to_owned(), http), ("raw".to_owned(), 9000)];
    assert_eq!(
        summary(&e),
        vec![
            (http_raw(8080), vec!["a".to_owned()], vec!["b".to_owned()]),
            (http_raw(9090), vec!["c".to_owned()], vec![]),
        ],
        "d has no IP yet"
    );
    assert_eq!(e.subsets[0].addresses[0].ip.as_str(), "10.1.0.1");
    assert_eq!(e.subsets[0].addresses[0].node_name.as_deref(), Some("n1"));
    assert_eq!(e.metadata.labels.get("app"), Some("web"));
    // a is deleted (gracefully: bound, it terminates): it leaves the endpoints at once.
    let delete = Command::Delete {
        key: ObjectKey::new(Kind::Pod, "default", "a"),
        grace_period_seconds: Some(30),
        preconditions: Preconditions::default(),
        propagation_policy: None,
    };
    let (_, changed) = w.run(vec![delete]);
    assert!(w.has(Kind::Pod, "default", "a"), "still terminating");
    w.settle(&mut c, changed);
    let e = endpoints(&w).expect("kept");
    assert_eq!(summary(&e)[0], (http_raw(8080), vec![], vec!["b".to_owned()]));
    // b becomes Ready: it moves.
    let changed = run(&mut w, "b", "10.1.0.2", true);
    w.settle(&mut c, changed);
    assert_eq!(summary(&endpoints(&w).expect("kept"))[0], (http_raw(8080), vec!["b".to_owned()], vec![]));
    // A pod relabelled out of the selector leaves.
    let mut b = w.pod("b");
    b.metadata.labels.insert("app", "other");
    let (_, changed) = w.run(vec![Command::Update(Object::from(b))]);
    w.settle(&mut c, changed);
    assert_eq!(summary(&endpoints(&w).expect("kept")), vec![(http_raw(9090), vec!["c".to_owned()], vec![])]);
    // The Service goes: so do its Endpoints.
    let delete = Command::Delete {
        key: ObjectKey::new(Kind::Service, "default", "web"),
        grace_period_seconds: None,
        preconditions: Preconditions::default(),
        propagation_policy: None,
    };
    let (_, changed) = w.run(vec![delete]);
    w.settle(&mut c, changed);
    assert!(endpoints(&w).is_none());
}

/// A Service without a selector keeps the Endpoints its user wrote; a full round leaves them.
#[test]
fn a_service_without_a_selector_keeps_its_own_endpoints() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n---\n\
                apiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\nsubsets: [{addresses: [{ip: 10.9.9.9}], ports: [{port: 80}]}]\n";
    let w = World::with(yaml);
    let mut c = EndpointsController::new();
    assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty());
}

/// More pods than an Endpoints object lists: Ready ones first, the cut said on the object.
#[test]
fn addresses_beyond_the_limit_are_cut_ready_ones_kept() {
    let mut w = World::with(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n",
    );
    let creates = (0..=ENDPOINTS_ADDRESSES_MAX)
        .map(|i| {
            Command::Create(
                crate::manifest::parse_manifests(&pod(&format!("p{i:04}"), "http", 80)).expect("valid").remove(0),
            )
        })
        .collect();
    w.run(creates);
    let mut statuses = Vec::new();
    for (i, mut p) in w.pods().into_iter().enumerate() {
        p.status.pod_ip = Some(format!("10.2.{}.{}", i / 200, i % 200).into());
        p.status.phase = Some(PodPhase::Running);
        // Only the last one is Ready.
        let status = if i == ENDPOINTS_ADDRESSES_MAX { ConditionStatus::True } else { ConditionStatus::False };
        p.status.conditions.push(PodCondition::new("Ready", status, Time::from_millis(1)));
        statuses.push(Command::UpdateStatus(Object::from(p)));
    }
    assert!(w.apply(statuses).iter().all(Result::is_ok));
    let mut c = EndpointsController::new();
    let commands = c.reconcile(&w.state, w.now_ms, true, &[], &[]);
    let outcomes = w.apply(commands);
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let e = endpoints(&w).expect("created");
    let ready: usize = e.subsets.iter().map(|s| s.addresses.len()).sum();
    let not_ready: usize = e.subsets.iter().map(|s| s.not_ready_addresses.len()).sum();
    assert_eq!((ready, not_ready), (1, ENDPOINTS_ADDRESSES_MAX - 1));
    assert_eq!(e.metadata.annotations.get(OVER_CAPACITY_ANNOTATION), Some("truncated"));
}

/// Pods whose named port resolves to more distinct numbers than an object has room for
/// subsets: the write is still accepted, the cut said on the object.
#[test]
fn more_distinct_ports_than_subsets_are_cut_not_refused() {
    let mut w = World::with(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}\n",
    );
    let n = crate::validation::LIST_ITEMS_MAX + 1;
    let creates = (0..n)
        .map(|i| {
            let port = 1000 + i32::try_from(i).expect("small");
            Command::Create(
                crate::manifest::parse_manifests(&pod(&format!("p{i:04}"), "http", port)).expect("valid").remove(0),
            )
        })
        .collect();
    w.run(creates);
    let statuses = w
        .pods()
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            p.status.pod_ip = Some(format!("10.3.{}.{}", i / 200, i % 200 + 1).into());
            p.status.phase = Some(PodPhase::Running);
            Command::UpdateStatus(Object::from(p))
        })
        .collect();
    w.run(statuses);
    let mut c = EndpointsController::new();
    let commands = c.reconcile(&w.state, w.now_ms, true, &[], &[]);
    assert!(w.apply(commands).iter().all(Result::is_ok));
    let e = endpoints(&w).expect("created");
    assert_eq!(e.subsets.len(), crate::validation::LIST_ITEMS_MAX);
    assert_eq!(e.metadata.annotations.get(OVER_CAPACITY_ANNOTATION), Some("truncated"));
}

/// A pod that finished leaves, whatever its restart policy; a selector change re-selects.
#[test]
fn finished_pods_leave_and_a_new_selector_re_selects() {
    let mut w = World::with(SERVICE);
    let mut c = EndpointsController::new();
    let mut changed = w.create(&(pod("a", "http", 8080) + "---\n" + &pod("b", "http", 8080)));
    changed.extend(run(&mut w, "a", "10.1.0.1", true));
    changed.extend(run(&mut w, "b", "10.1.0.2", true));
    changed.extend(w.state.list(Kind::Service, None).map(Object::key).collect::<Vec<_>>());
    w.settle(&mut c, changed);
    let mut a = w.pod("a");
    a.status.phase = Some(PodPhase::Failed);
    let (_, changed) = w.run(vec![Command::UpdateStatus(Object::from(a))]);
    w.settle(&mut c, changed);
    let e = endpoints(&w).expect("kept");
    assert_eq!(summary(&e)[0].1, vec!["b".to_owned()], "the failed pod left");
    // The Service now selects another label: nothing matches.
    let Some(Object::Service(s)) = w.state.get(&ObjectKey::new(Kind::Service, "default", "web")).cloned() else {
        panic!("service")
    };
    let mut s = (*s).clone();
    s.spec.selector = [("app", "other")].into_iter().collect();
    let (_, changed) = w.run(vec![Command::Update(Object::from(s))]);
    w.settle(&mut c, changed);
    assert!(endpoints(&w).expect("kept").subsets.is_empty());
}

/// The state a round reads may be ahead of the changes it is told of: a Service's selector
/// that changed and changed back before the round was told, with a pod of the first selector
/// created in between, leaves no stale member (the kept members are checked against a fresh
/// count on every sync).
#[test]
fn members_follow_a_selector_changed_and_back_before_the_round_was_told() {
    let mut w = World::with(SERVICE);
    let mut c = EndpointsController::new();
    let mut changed = w.create(&pod("a", "http", 8080));
    changed.extend(run(&mut w, "a", "10.1.0.1", true));
    changed.extend(w.state.list(Kind::Service, None).map(Object::key).collect::<Vec<_>>());
    w.settle(&mut c, changed);
    let service = |w: &World| match w.state.get(&ObjectKey::new(Kind::Service, "default", "web")).cloned() {
        Some(Object::Service(s)) => (*s).clone(),
        _ => panic!("service"),
    };
    // The selector moves to `app: other`; a pod `b` of the first label comes; the round is told
    // of `b` only (which the Service, as the state has it, does not select).
    let mut s = service(&w);
    s.spec.selector = [("app", "other")].into_iter().collect();
    w.run(vec![Command::Update(Object::from(s))]);
    let mut told = w.create(&pod("b", "http", 8080));
    told.extend(run(&mut w, "b", "10.1.0.2", true));
    let commands = c.reconcile(&w.state, w.now_ms, false, &told, &[]);
    w.run(commands);
    // Back to `app: web`, told: both pods.
    let mut s = service(&w);
    s.spec.selector = [("app", "web")].into_iter().collect();
    let (_, changed) = w.run(vec![Command::Update(Object::from(s))]);
    w.settle(&mut c, changed);
    assert_eq!(summary(&endpoints(&w).expect("kept"))[0].1, vec!["a".to_owned(), "b".to_owned()]);
}
