//! An upgraded node restarts on the data an earlier build wrote.
//!
//! `tests/fixtures/format-vN/` is a data directory (RocksDB log, snapshot) written by a build of
//! storage format version N (orch-core's `codec::FORMAT_VERSION`): a snapshot, entries after it,
//! every command and kind. Each is committed and never rewritten: a change of layout bumps the
//! format version, keeps a reader for the older ones, and writes the new version's fixture with
//! `write_format_fixture` (ignored); the test opens every version's fixture. Format 2 added
//! `acked_below` to requests, so the version 1 fixture's log is read through format 1's frozen
//! entry layout; format 3 added the commands `Scale` and `RolloutUndo`, which its fixture's log
//! holds; format 4 stamps each entry with its rules version (orch-core's `rules`), and the
//! formats 2 and 3 fixtures' logs are read through their frozen entry layout; format 5 appends
//! the serial that opened each session to snapshots, and the formats 1 to 4 snapshots end with
//! the table; format 6 is rules version 2, its fixture's entries stamped with it; format 7 is
//! rules version 3, whose fixture holds a bind refused because the pod does not fit; format 8
//! is rules version 4, whose fixture holds an apply that keeps the controller's annotation and
//! the scaled replicas the manifest leaves out; format 9 is rules version 5, whose pods hold the
//! default tolerations, and one is applied again with a toleration added; format 10 added a
//! delete's propagation policy, and its fixture holds a foreground delete; format 11 added the
//! model fields of node affinity and podIPs (read as absent from older fixtures), and its
//! fixture's pods have both, with a bind refused for its affinity; format 12 is rules version
//! 6 (apply merges); format 13 is rules version 7, whose fixture holds a node created with a
//! pod range and a change of that range refused.
//!
//! From format 4 on a fixture also holds `sessions.json`, the deduplication table's outcomes
//! (what a retry of each request would get): replaying the fixture must give them again, so a
//! change of apply's rules that changes an old entry's outcome fails here unless it is
//! versioned.

use std::path::Path;

use orch_core::{ClientId, Command, Kind, Object, ObjectKey, Preconditions, Request, State, parse_manifests};
use orch_raft::control_plane::{Consistency, ControlPlane, SnapshotSettings};

use crate::control_plane::eventually;

/// The fixture written by format `version`.
fn fixture(version: u8) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/format-v{version}"))
}

/// Proposals before the snapshot: the membership entry, the leader's blank entry and these
/// creates make 9 log entries, `every_entries` of the fixture's snapshot settings.
const CREATES: usize = 7;

/// What the fixture's node was asked to do, one proposal per item.
fn proposals() -> Vec<Vec<Command>> {
    let objects = parse_manifests(include_str!("../../../examples/web.yaml")).expect("example parses");
    let mut out: Vec<Vec<Command>> = objects.into_iter().map(|o| vec![Command::Create(o)]).collect();
    // Format 14: nodeInfo and daemonEndpoints.
    let node = "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {zone: a}}\nstatus:\n  capacity: {cpu: '4', memory: 8Gi, pods: '110'}\n  conditions: [{type: Ready, status: 'True'}]\n  addresses: [{type: InternalIP, address: 10.0.0.1}]\n  nodeInfo: {kernelVersion: 6.1.0, osImage: Debian, operatingSystem: linux, architecture: amd64, kubeletVersion: orch-node 0.1.0}\n  daemonEndpoints: {kubeletEndpoint: {Port: 10250}}\n";
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n";
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: team, labels: {{app: x}}, finalizers: [example.com/keep]}}\n\
             spec:\n  affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: \
             [{{matchExpressions: [{{key: zone, operator: In, values: [a]}}, {{key: zone, operator: NotIn, values: [b]}}, \
             {{key: zone, operator: Exists}}, {{key: gpu, operator: DoesNotExist}}]}}, \
             {{matchFields: [{{key: metadata.name, operator: In, values: [n1]}}]}}]}}, \
             preferredDuringSchedulingIgnoredDuringExecution: [{{weight: 5, preference: {{matchExpressions: \
             [{{key: cores, operator: Gt, values: ['2']}}, {{key: cores, operator: Lt, values: ['64']}}]}}}}]}}}}\n  \
             containers:\n  - name: c\n    image: busybox:1.36\n    command: [sleep, '3600']\n    env: [{{name: A, value: b}}, \
             {{name: N, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}, \
             {{name: K, valueFrom: {{configMapKeyRef: {{name: settings, key: k, optional: true}}}}}}]\n    \
             envFrom: [{{prefix: S_, secretRef: {{name: creds}}}}]\n    \
             volumeMounts: [{{name: cfg, mountPath: /etc/cfg, readOnly: true}}, {{name: tmp, mountPath: /scratch}}]\n    \
             readinessProbe: {{httpGet: {{path: /, port: 80, httpHeaders: [{{name: X, value: y}}]}}}}\n  \
             volumes: [{{name: cfg, configMap: {{name: settings, items: [{{key: k, path: k.txt, mode: 0600}}]}}}}, \
             {{name: tmp, emptyDir: {{medium: Memory, sizeLimit: 1Mi}}}}, {{name: s, secret: {{secretName: creds}}}}]\n"
        )
    };
    let one = |yaml: &str| parse_manifests(yaml).expect("fixture parses").remove(0);
    out.push(vec![Command::Create(one(node))]);
    out.push(vec![Command::Create(one(ns))]);
    out.push(vec![Command::Create(one(&pod("p1")))]);
    out.push(vec![Command::Create(one(&pod("p2")))]);
    // The snapshot covers the creates above; every kind of command below stays in the log.
    out.push(vec![Command::Batch(vec![Command::Create(one(&pod("p4"))), Command::Create(one(&pod("p5")))])]);
    let mut relabeled = one(&pod("p5"));
    relabeled.meta_mut().labels.insert("tier", "b");
    // Rules 3 (format 7): a bind the node has no room for is refused, and its outcome kept
    // (in the same entry as the update, so that the log after the snapshot stays short of
    // a second one).
    let big = "apiVersion: v1\nkind: Pod\nmetadata: {name: big, namespace: team}\nspec:\n  containers:\n  - name: c\n    \
         image: busybox:1.36\n    command: [sleep, '3600']\n    resources: {requests: {cpu: '64'}}\n";
    out.push(vec![
        Command::Update(relabeled),
        Command::Create(one(big)),
        Command::Bind {
            namespace: "team".into(),
            name: "big".into(),
            node: "n1".into(),
            preconditions: Preconditions::default(),
        },
    ]);
    out.push(vec![Command::Bind {
        namespace: "team".into(),
        name: "p1".into(),
        node: "n1".into(),
        preconditions: Preconditions::default(),
    }]);
    let mut running = one(&pod("p1"));
    if let Object::Pod(p) = &mut running {
        let p = std::sync::Arc::make_mut(p);
        p.status.phase = Some(orch_core::core_v1::PodPhase::Running);
        p.status.pod_ip = Some("10.1.0.5".into());
        // Format 11: podIPs (and every pod's node affinity, above).
        p.status.pod_ips = vec![orch_core::core_v1::PodIp { ip: "10.1.0.5".into() }];
    }
    out.push(vec![Command::UpdateStatus(running)]);
    out.push(vec![Command::Apply(one(&pod("p2").replace("busybox:1.36", "busybox:1.37")))]);
    out.push(vec![Command::Delete {
        key: ObjectKey::new(Kind::Pod, "team", "p1"),
        grace_period_seconds: Some(0),
        preconditions: Preconditions::default(),
        propagation_policy: None,
    }]);
    out.push(vec![Command::Create(one(&pod("p3"))), Command::Create(one(&pod("p3")))]);
    // Format 3's commands (the fixtures of earlier formats end above).
    // One entry (a second snapshot would otherwise be due); the undo is refused (the deployment
    // has no ReplicaSets) but is in the log all the same.
    // From format 4, whose fixture records outcomes: refusals of each kind that depends on the
    // state, in the same entry.
    let mut bad_status = one(&pod("p2"));
    if let Object::Pod(p) = &mut bad_status {
        let p = std::sync::Arc::make_mut(p);
        p.status.container_statuses =
            vec![orch_core::core_v1::ContainerStatus { name: "nope".into(), ..Default::default() }];
    }
    // Rules 4 (format 8): the deployment annotated as its controller would, then applied
    // from a manifest without the annotation or replicas: both stay.
    let web = parse_manifests(include_str!("../../../examples/web.yaml"))
        .expect("example parses")
        .into_iter()
        .find(|o| o.key().kind == Kind::Deployment)
        .expect("a deployment");
    let mut annotated = web.clone();
    annotated.meta_mut().annotations.insert("deployment.kubernetes.io/revision", "7");
    let mut unscaled = web;
    if let Object::Deployment(d) = &mut unscaled {
        std::sync::Arc::make_mut(d).spec.replicas = None;
    }
    // Rules 5 (format 9): pods get the default tolerations (every pod above, in that
    // fixture); p3 applied again with a toleration of its own added keeps them, first.
    let tolerant = pod("p3").replace("  containers:\n", "  tolerations: [{key: k, operator: Exists}]\n  containers:\n");
    // Format 12 (rules 6): apply merges. A manifest applied, scaled, applied again without
    // its `tier` label (removed) and without replicas (the scale stays); a typed apply of a
    // pod merges as its manifest, and so drops the toleration the last one added, which a pod
    // update may not (refused, as in Kubernetes).
    let api = |labels: serde_json::Value| {
        let manifest = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "shop", "labels": labels},
            "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "api", "image": "api:1", "ports": [{"containerPort": 80}]}]}}},
        });
        Command::ApplyManifest(manifest.to_string())
    };
    out.push(vec![
        Command::Apply(one(&tolerant)),
        Command::Update(annotated),
        Command::Scale { key: ObjectKey::new(Kind::Deployment, "shop", "web"), replicas: 5 },
        Command::Apply(unscaled),
        Command::RolloutUndo { namespace: "shop".into(), name: "web".into(), to_revision: 0 },
        Command::UpdateStatus(bad_status),
        Command::Delete {
            key: ObjectKey::new(Kind::Pod, "team", "p2"),
            grace_period_seconds: Some(0),
            preconditions: Preconditions { uid: Some(orch_core::Uid::from_u128(7)), resource_version: None },
            propagation_policy: None,
        },
        Command::Delete {
            key: ObjectKey::new(Kind::Pod, "team", "nope"),
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
            propagation_policy: None,
        },
        Command::Delete {
            key: ObjectKey::new(Kind::Namespace, "", "default"),
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
            propagation_policy: None,
        },
        // Format 11: a bind refused for the pod's required node affinity.
        Command::Create(one(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: far, namespace: team}\nspec:\n  affinity: {nodeAffinity: \
             {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: \
             [{key: zone, operator: In, values: [z]}]}]}}}\n  containers: [{name: c, image: x}]\n",
        )),
        Command::Bind {
            namespace: "team".into(),
            name: "far".into(),
            node: "n1".into(),
            preconditions: Preconditions::default(),
        },
        // Format 10: a delete with a propagation policy (the deployment stays, marked, with
        // the foregroundDeletion finalizer).
        Command::Delete {
            key: ObjectKey::new(Kind::Deployment, "shop", "web"),
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
            propagation_policy: Some(orch_core::PropagationPolicy::Foreground),
        },
        api(serde_json::json!({"app": "api", "tier": "back"})),
        Command::Scale { key: ObjectKey::new(Kind::Deployment, "shop", "api"), replicas: 3 },
        api(serde_json::json!({"app": "api"})),
        Command::Apply(one(&pod("p3"))),
        // Format 13 (rules 7): a node's podCIDR is set once: a node created with one, and a
        // change of it refused (a range that is no CIDR is refused at admission, before the
        // log).
        Command::Create(one(&cidr_node("n2", "10.244.2.0/24"))),
        Command::Update(one(&cidr_node("n2", "10.244.9.0/24"))),
        // Format 14 (rules 8): ConfigMaps and Secrets (stringData merged into data), an
        // immutable one's change refused, a pod without an image, one on the host's network.
        Command::Create(one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: team}\ndata: {k: v}\nbinaryData: {b: AAEC}\nimmutable: true\n")),
        Command::Update(one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: team}\ndata: {k: w}\nimmutable: true\n")),
        Command::Create(one("apiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: team}\nstringData: {password: hunter2}\ndata: {user: YWRtaW4=}\n")),
        Command::Create(one("apiVersion: v1\nkind: Pod\nmetadata: {name: plain, namespace: team}\nspec:\n  hostNetwork: true\n  containers: [{name: c, command: [orch-hello], ports: [{containerPort: 8080}]}]\n")),
    ]);
    out
}

/// A node `name` with the pod range `cidr`.
fn cidr_node(name: &str, cidr: &str) -> String {
    format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{podCIDR: '{cidr}'}}\n")
}

/// The deduplication table's outcomes, as JSON (independent of the storage layout).
fn outcomes(state: &State) -> serde_json::Value {
    let all: Vec<_> =
        state.sessions().outcomes().map(|(client, serial, outcome)| (client.0.to_string(), serial, outcome)).collect();
    serde_json::to_value(all).expect("json")
}

/// The first format whose fixtures hold `sessions.json`.
const OUTCOMES_SINCE: u8 = 4;

fn objects(state: &State) -> Vec<Object> {
    Kind::ALL.iter().flat_map(|k| state.list(*k, None).cloned().collect::<Vec<_>>()).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes tests/fixtures/format-vN for this build's format; run once per new format version"]
async fn write_format_fixture() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = SnapshotSettings { every_entries: 9, keep_entries: 0, ..SnapshotSettings::default() };
    let node =
        ControlPlane::builder(1, dir.path()).single_node().snapshots(settings).seed(1).start().await.expect("starts");
    eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
    let all = proposals();
    // One client whose first serial stays unacknowledged (`acked_below` 1), so the table keeps
    // every outcome for sessions.json.
    let mut serial = 0;
    let mut submit = |commands: &[Command]| {
        let requests: Vec<_> = commands
            .iter()
            .map(|command| {
                serial += 1;
                Request { client: ClientId(4), serial, acked_below: 1, retry: false, command: command.clone() }
            })
            .collect();
        node.submit(requests)
    };
    for p in &all[..CREATES] {
        submit(p).await.expect("proposed");
    }
    let mark = node.metrics().last_log_index;
    eventually("a snapshot", || (node.metrics().snapshot_index == mark).then_some(())).await;
    for p in &all[CREATES..] {
        let outcomes = submit(p).await.expect("proposed");
        assert!(outcomes.iter().all(Result::is_ok) || p.len() >= 2, "{outcomes:?}");
    }
    assert_eq!(node.metrics().snapshot_index, mark, "one snapshot, the rest in the log");
    let state = node.state(Consistency::Linearizable).await.expect("state");
    node.shutdown().await.expect("shuts down");
    drop(node);
    let out = &fixture(orch_core::codec::FORMAT_VERSION);
    assert!(!out.exists(), "a fixture is never rewritten: {}", out.display());
    copy_dir(dir.path(), out);
    for f in ["log/LOG", "log/LOCK"] {
        let _ = std::fs::remove_file(out.join(f));
    }
    let expected = serde_json::to_string_pretty(&objects(&state)).expect("json");
    std::fs::write(out.join("expected.json"), expected).expect("write");
    let sessions = serde_json::to_string_pretty(&outcomes(&state)).expect("json");
    std::fs::write(out.join("sessions.json"), sessions).expect("write");
    std::fs::write(out.join("applied-index"), state.applied_index().to_string()).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarts_on_data_written_by_every_format_version() {
    for version in 1..=orch_core::codec::FORMAT_VERSION {
        restarts_on(version).await;
    }
}

async fn restarts_on(version: u8) {
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(fixture(version).exists(), "no fixture for format {version}: write one with write_format_fixture");
    copy_dir(&fixture(version), dir.path());
    if version == orch_core::codec::FORMAT_VERSION {
        // The newest fixture was written under this build's rules: a change of rules comes with
        // a new format, and so a new fixture that records its outcomes.
        let stamps: Vec<u16> = fixture_entries(&fixture(version)).iter().map(|e| e.rules).collect();
        assert!(stamps.len() >= 8 && stamps.iter().all(|r| *r == orch_core::rules::RULES_VERSION), "{stamps:?}");
    }
    let node =
        ControlPlane::open(dir.path()).await.unwrap_or_else(|e| panic!("format {version}: opening the old data: {e}"));
    eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
    let state = node.state(Consistency::Linearizable).await.expect("state");
    let applied: u64 =
        std::fs::read_to_string(dir.path().join("applied-index")).expect("read").parse().expect("a number");
    assert_eq!(state.applied_index(), applied, "format {version}: the snapshot and the log after it replayed");
    let snapshot = node.metrics().snapshot_index;
    assert!(
        snapshot > 0 && snapshot + 7 <= applied,
        "format {version}: a snapshot at {snapshot}, entries after it up to {applied}"
    );
    let expected: Vec<Object> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("expected.json")).expect("read"))
            .expect("parses");
    assert_eq!(objects(&state), expected, "format {version}");
    assert!(expected.len() >= 8, "the fixture holds every kind it was written with");
    let sessions = dir.path().join("sessions.json");
    if version >= OUTCOMES_SINCE {
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&sessions).expect("sessions.json")).expect("parses");
        assert!(expected.as_array().is_some_and(|a| a.len() >= 14), "format {version}: every request's outcome");
        assert_eq!(outcomes(&state), expected, "format {version}: the outcomes replayed");
    }
    // And it goes on writing.
    let more = parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: after}\n").expect("parses");
    let outcomes = node.propose(vec![Command::Create(more[0].clone())]).await.expect("proposed");
    assert!(outcomes[0].is_ok(), "format {version}: {outcomes:?}");
    node.shutdown().await.expect("shuts down");
}

/// The format that last added fields to the model: snapshots from it on re-encode to their
/// own bytes (format 11 and 14 added fields).
const MODEL_CHANGED: u8 = 14;

/// The snapshot layout did not change from format 1 to 10 but for the sessions' openings
/// format 5 appended (the compact deduplication table encodes as the maps it replaced), and
/// formats 11 and 14 added model fields: the state every fixture's snapshot holds encodes to
/// the same bytes again from format 14 on, and to bytes of the same state before.
#[test]
fn every_fixture_s_snapshot_encodes_to_its_own_bytes() {
    for version in 1..=orch_core::codec::FORMAT_VERSION {
        let file = std::fs::read(fixture(version).join("state/snapshot.bin")).expect("reads the snapshot");
        // orch-raft's file: magic (8), version (1), digest (32), meta length (u32 LE), meta, state.
        let meta_len = u32::from_le_bytes(file[41..45].try_into().expect("four bytes")) as usize;
        let bytes = &file[45 + meta_len..];
        let state = State::from_snapshot(bytes).unwrap_or_else(|e| panic!("format {version}: {e}"));
        assert!(state.sessions().outcome_bytes() > 0, "format {version}: the table holds outcomes");
        let again = state.to_snapshot();
        assert_eq!(again[..8], bytes[..8], "format {version}");
        if version >= MODEL_CHANGED {
            assert_eq!(again[9..], bytes[9..], "format {version}: the same payload and digest");
            continue;
        }
        // Formats 11 and 14 added model fields (a pod's affinity and podIPs; volumes,
        // variable sources, hostNetwork, a node's nodeInfo and daemonEndpoints), which this
        // build writes (as their defaults) for the objects of an older snapshot: the bytes
        // differ, the state they hold does not.
        let back = State::from_snapshot(&again).unwrap_or_else(|e| panic!("format {version}: {e}"));
        assert_eq!(objects(&back), objects(&state), "format {version}: the same objects");
        assert_eq!(outcomes(&back), outcomes(&state), "format {version}: the same outcomes");
        assert_eq!(back.to_snapshot(), again, "format {version}: stable from there on");
        if version == 5 {
            // Format 5's build recorded openings for rules 1 entries, which rules 1 does not:
            // this build reads them and drops them (its fixture's: client 4 at serial 1).
            assert_eq!(bytes[bytes.len() - 3..], [1, 4, 1], "format 5's openings");
            assert_eq!(again[again.len() - 1], 0, "format 5: no openings");
        } else if version < 5 {
            // Format 5 appended the sessions' openings (none known in an older snapshot: one
            // byte) after the table, whose layout it kept.
            assert_eq!(again[again.len() - 1], 0, "format {version}: then no openings");
        }
    }
}

/// The log column family of the fixture copied to `dir`, opened as RocksDB.
fn fixture_log(dir: &Path) -> rocksdb::DB {
    let cfs = ["log", "meta"].map(|name| rocksdb::ColumnFamilyDescriptor::new(name, rocksdb::Options::default()));
    rocksdb::DB::open_cf_descriptors(&rocksdb::Options::default(), dir.join("log"), cfs)
        .expect("opens the fixture's log")
}

/// The orch entries of the log of the fixture in `dir`, opened read-only.
fn fixture_entries(dir: &Path) -> Vec<orch_core::Entry> {
    let cfs = ["log", "meta"];
    let db = rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), dir.join("log"), cfs, false)
        .expect("opens the fixture's log");
    let cf = db.cf_handle("log").expect("log column family");
    db.iterator_cf(&cf, rocksdb::IteratorMode::Start)
        .filter_map(|item| {
            let (_, bytes) = item.expect("reads");
            match orch_raft::codec::decode_entry(&bytes).expect("decodes").payload {
                openraft::EntryPayload::Normal(entry) => Some(entry),
                _ => None,
            }
        })
        .collect()
}

/// A node never applies an entry under other rules than it was written for: one whose rules
/// version this build does not apply (a newer build wrote it) stops the node before it is
/// applied, as an unknown format version does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stops_at_an_entry_of_rules_it_does_not_apply() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&fixture(orch_core::codec::FORMAT_VERSION), dir.path());
    let applied: u64 =
        std::fs::read_to_string(dir.path().join("applied-index")).expect("read").parse().expect("a number");
    // The fixture's third entry from the end, as a newer build would have stamped it.
    let stamped = applied - 2;
    {
        let db = fixture_log(dir.path());
        let cf = db.cf_handle("log").expect("log column family");
        let key = orch_raft::codec::index_key(stamped);
        let bytes = db.get_cf(&cf, key).expect("reads").expect("the entry is in the log");
        let mut entry = orch_raft::codec::decode_entry(&bytes).expect("decodes");
        let openraft::EntryPayload::Normal(batch) = &mut entry.payload else { panic!("a normal entry") };
        batch.rules = orch_core::rules::RULES_VERSION + 1;
        db.put_cf(&cf, key, orch_raft::codec::encode_entry(&entry)).expect("writes");
        db.flush_wal(true).expect("syncs");
    }
    // openraft reads the committed entries it will apply when it starts: the node refuses to.
    let error = match ControlPlane::open(dir.path()).await {
        Ok(node) => {
            let why = eventually("the node stops", || node.health().err()).await;
            assert!(node.metrics().applied_index < stamped, "not applied");
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), node.shutdown()).await;
            why
        }
        Err(e) => e.to_string(),
    };
    let expected = orch_core::codec::CodecError::Rules { found: orch_core::rules::RULES_VERSION + 1 }.to_string();
    assert!(error.contains(&expected), "{error}");
}
