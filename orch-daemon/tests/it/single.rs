//! One `orchd` driven by `orchctl`: apply, get, scale, delete, bad input, endpoints, restart.

use std::time::Duration;

use futures_util::StreamExt;
use orch_api::{Client, Error, WatchItem};
use orch_core::{EventType, Kind, ObjectKey};

use crate::harness::{Daemon, eventually, http, http_get, ok, orchctl};

const NET: u8 = 11;

/// Two nodes registered by hand, with no agent (a test fixture: with a real agent no node is
/// registered by hand).
fn nodes() -> String {
    format!("{}/tests/it/fixtures/nodes.yaml", env!("CARGO_MANIFEST_DIR"))
}

/// The shop's web Deployment and Service.
fn web() -> String {
    format!("{}/../examples/web.yaml", env!("CARGO_MANIFEST_DIR"))
}

fn ready(d: &Daemon) {
    eventually("orchd to be ready", || {
        http_get(&http(d.net, d.id), "/readyz").filter(|(code, _)| *code == 200).map(|_| ())
    });
}

/// A single-node orchd in `root` on network `net`, started and ready (for tests off the runtime).
fn started(root: &std::path::Path, net: u8) -> Daemon {
    started_with(root, net, &[])
}

/// As [`started`], with orchd's `flags`.
fn started_with(root: &std::path::Path, net: u8, flags: &[&str]) -> Daemon {
    let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
    let mut d = Daemon::new(root, net, 1, &flags);
    d.start();
    ready(&d);
    d
}

/// One node on network `net`, started and ready (from an async test); with its API address.
async fn start_ready(root: &std::path::Path, net: u8) -> (Daemon, String) {
    start_ready_with(root, net, &[]).await
}

/// As [`start_ready`], with orchd's `flags`.
async fn start_ready_with(root: &std::path::Path, net: u8, flags: &[&str]) -> (Daemon, String) {
    let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
    let mut d = Daemon::new(root, net, 1, &flags);
    d.start();
    let d_http = http(d.net, d.id);
    tokio::task::spawn_blocking(move || eventually("ready", || http_get(&d_http, "/readyz").filter(|r| r.0 == 200)))
        .await
        .expect("ready");
    let server = d.api();
    (d, server)
}

/// The shop's web deployment, as JSON.
fn v_of(server: &str) -> serde_json::Value {
    serde_json::from_str(&ok(server, &["get", "deploy", "web", "-n", "shop", "-o", "json"])).expect("json")
}

#[test]
fn orchctl_applies_gets_scales_and_deletes_on_one_node() {
    let root = tempfile::tempdir().expect("temp dir");
    // Settings from a file; the flags the harness adds win over it.
    let config = root.path().join("orchd.toml");
    std::fs::write(&config, "log-level = \"warn\"\nsnapshot-every-entries = 50\napi-addr = \"127.0.0.1:1\"\n")
        .expect("writes");
    let mut d = Daemon::new(root.path(), NET, 1, &["--config".to_owned(), config.display().to_string()]);
    d.start();
    ready(&d);
    let server = d.api();
    // An unknown setting is refused at start-up, with its name.
    let bad = root.path().join("bad.toml");
    std::fs::write(&bad, "colour = \"blue\"\n").expect("writes");
    let refused =
        std::process::Command::new(env!("CARGO_BIN_EXE_orchd")).arg("--config").arg(&bad).output().expect("runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown field `colour`"), "{refused:?}");
    let (nodes, web) = (nodes(), web());

    let applied = ok(&server, &["apply", "-f", &nodes, "-f", &web]);
    for line in ["node/node-a created", "namespace/shop created", "deployment.apps/web created", "service/web created"]
    {
        assert!(applied.contains(line), "{line} missing from:\n{applied}");
    }
    // Idempotent: the same files again change nothing.
    let again = ok(&server, &["apply", "-f", &nodes, "-f", &web]);
    assert!(again.contains("deployment.apps/web unchanged"), "{again}");

    let table = ok(&server, &["get", "deploy", "-n", "shop"]);
    assert!(table.starts_with("NAME   READY   UP-TO-DATE   AVAILABLE   AGE\nweb    0/3 "), "{table}");
    let all = ok(&server, &["get", "svc", "-A"]);
    assert!(all.starts_with("NAMESPACE") && all.contains("shop"), "{all}");
    let yaml = ok(&server, &["get", "deployment", "web", "-n", "shop", "-o", "yaml"]);
    assert!(yaml.contains("replicas: 3"), "{yaml}");
    let names = ok(&server, &["get", "no", "-o", "name"]);
    assert!(names.contains("node/node-a"), "{names}");
    // As kubectl: the note goes to standard error, so a script reading the output gets nothing.
    let selected = orchctl(&server, &["get", "deploy", "-A", "-l", "app=nothing"], None);
    assert!(selected.status.success());
    assert_eq!(String::from_utf8_lossy(&selected.stdout), "");
    assert_eq!(String::from_utf8_lossy(&selected.stderr), "No resources found\n");

    assert_eq!(ok(&server, &["scale", "deploy/web", "-n", "shop", "--replicas", "5"]), "deployment.apps/web scaled\n");
    let json = ok(&server, &["get", "deploy", "web", "-n", "shop", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["spec"]["replicas"], 5);
    // Apply merges, as kubectl's. Replicas the last manifest named and this one does not are
    // removed (back to 1, however scaled); once the manifest leaves them out, a scale stays.
    let revision = "deployment.kubernetes.io/revision";
    eventually("revision 1", || v_of(&server)["metadata"]["annotations"].get(revision).map(|_| ()));
    let unscaled = std::fs::read_to_string(&web).expect("reads").replace("  replicas: 3\n", "");
    let apply = |manifest: &str| {
        let out = orchctl(&server, &["apply", "-f", "-"], Some(manifest));
        assert!(String::from_utf8_lossy(&out.stdout).contains("deployment.apps/web configured"), "{out:?}");
    };
    apply(&unscaled);
    assert_eq!(v_of(&server)["spec"]["replicas"], 1);
    assert_eq!(ok(&server, &["scale", "deploy/web", "-n", "shop", "--replicas", "5"]), "deployment.apps/web scaled\n");
    apply(&unscaled.replace("  labels:\n    app: web\n", "  labels:\n    app: web\n    tier: front\n"));
    let merged = v_of(&server);
    assert_eq!(merged["spec"]["replicas"], 5, "the scale stays");
    assert_eq!(merged["metadata"]["labels"]["tier"], "front");
    assert!(merged["metadata"]["annotations"].get(revision).is_some(), "the controller's annotation stays: {merged}");
    let recorded = merged["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .expect("the manifest is recorded");
    assert!(recorded.contains("\"tier\":\"front\"") && !recorded.contains("replicas"), "{recorded}");

    let described = ok(&server, &["describe", "deploy", "web", "-n", "shop"]);
    assert!(described.starts_with("Name:         web\nNamespace:    shop\n"), "{described}");

    assert_eq!(ok(&server, &["cordon", "node-a"]), "node/node-a cordoned\n");
    assert!(ok(&server, &["get", "nodes"]).contains("SchedulingDisabled"));
    assert_eq!(ok(&server, &["uncordon", "node-a"]), "node/node-a uncordoned\n");
    // drain: cordon, then delete the pods bound to the node.
    let bound = "apiVersion: v1\nkind: Pod\nmetadata: {name: bound, namespace: shop}\n\
                 spec: {nodeName: node-a, containers: [{name: c, image: busybox}]}\n";
    let out = orchctl(&server, &["create", "-f", "-"], Some(bound));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pod/bound created\n");
    let again = orchctl(&server, &["create", "-f", "-"], Some(bound));
    assert!(String::from_utf8_lossy(&again.stderr).starts_with("Error from server (AlreadyExists)"));
    let fails = |args: &[&str]| {
        let out = orchctl(&server, args, None);
        assert!(!out.status.success(), "orchctl {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // The drain evicts every pod on the node: `bound`, and the web pods the scheduler put there.
    let drained = ok(&server, &["drain", "node-a", "--grace-period", "0"]);
    assert!(drained.starts_with("node/node-a cordoned\n") && drained.ends_with("node/node-a drained\n"), "{drained}");
    assert!(drained.contains("evicting pod shop/bound\n"), "{drained}");
    let err = fails(&["get", "pod", "bound", "-n", "shop"]);
    assert!(err.contains("NotFound"), "{err}");
    assert_eq!(ok(&server, &["uncordon", "node-a"]), "node/node-a uncordoned\n");

    // orchd's deployment controller made revision 1; a new template makes revision 2 (its
    // rollout waits: no agent makes the pods Ready); undo brings revision 1's template back as
    // revision 3.
    let history = |rows: &str| format!("deployment.apps/web\nREVISION   CHANGE-CAUSE\n{rows}");
    let revisions = || ok(&server, &["rollout", "history", "deploy/web", "-n", "shop"]);
    eventually("revision 1", || (revisions() == history("1          <none>\n")).then_some(()));
    let image = v["spec"]["template"]["spec"]["containers"][0]["image"].as_str().expect("image").to_owned();
    let next = std::fs::read_to_string(&web).expect("reads").replace(&format!("image: {image}"), "image: busybox:1.37");
    let applied = orchctl(&server, &["apply", "-f", "-"], Some(&next));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    eventually("revision 2", || (revisions() == history("1          <none>\n2          <none>\n")).then_some(()));
    assert_eq!(ok(&server, &["rollout", "undo", "deploy/web", "-n", "shop"]), "deployment.apps/web rolled back\n");
    let undone: serde_json::Value =
        serde_json::from_str(&ok(&server, &["get", "deploy", "web", "-n", "shop", "-o", "json"])).expect("json");
    assert_eq!(undone["spec"]["template"]["spec"]["containers"][0]["image"], image.as_str());
    assert!(undone["spec"]["template"]["metadata"]["labels"].get("pod-template-hash").is_none());
    eventually("revision 3", || (revisions() == history("2          <none>\n3          <none>\n")).then_some(()));
    // Pause and resume, as kubectl.
    assert_eq!(ok(&server, &["rollout", "pause", "deploy/web", "-n", "shop"]), "deployment.apps/web paused\n");
    let err = fails(&["rollout", "pause", "deploy/web", "-n", "shop"]);
    assert!(err.contains("deployments.apps \"web\" is already paused"), "{err}");
    let err = fails(&["rollout", "restart", "deploy/web", "-n", "shop"]);
    assert!(err.contains("can't restart paused deployment"), "{err}");
    assert_eq!(ok(&server, &["rollout", "resume", "deploy/web", "-n", "shop"]), "deployment.apps/web resumed\n");
    assert_eq!(ok(&server, &["rollout", "restart", "deploy/web", "-n", "shop"]), "deployment.apps/web restarted\n");
    eventually("revision 4", || revisions().contains("\n4          <none>\n").then_some(()));

    assert_eq!(ok(&server, &["delete", "deploy", "web", "-n", "shop"]), "deployment.apps/web deleted\n");
    let gone = orchctl(&server, &["get", "deploy", "web", "-n", "shop"], None);
    assert!(!gone.status.success());
    assert_eq!(String::from_utf8_lossy(&gone.stderr), "Error from server (NotFound): deployments \"web\" not found\n");

    // get -w lists, then prints changes as they commit.
    let mut watcher = std::process::Command::new(crate::harness::orchctl_bin())
        .args(["--server", &server, "get", "ns", "-w"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("orchctl -w starts");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watcher.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = || rx.recv_timeout(crate::harness::WAIT).expect("a line from orchctl get -w");
    assert!(next_line().starts_with("NAME"), "the table's head first");
    while !next_line().starts_with("shop") {}
    let out =
        orchctl(&server, &["apply", "-f", "-"], Some("apiVersion: v1\nkind: Namespace\nmetadata: {name: late}\n"));
    assert!(out.status.success());
    while !next_line().starts_with("late ") {}
    let _ = watcher.kill();
    let _ = watcher.wait();

    // Logs of a pod that is not there: the server says so.
    let logs = orchctl(&server, &["logs", "web-1"], None);
    assert!(!logs.status.success() && String::from_utf8_lossy(&logs.stderr).contains("NotFound"), "{logs:?}");

    // The endpoints.
    let (code, metrics) = http_get(&http(NET, 1), "/metrics").expect("metrics answer");
    assert_eq!(code, 200);
    assert!(metrics.contains("orch_api_requests_total{method=\"Apply\",code=\"OK\"}"), "{metrics}");
    assert!(metrics.contains("orch_raft_is_leader 1"), "{metrics}");
    assert!(metrics.contains("orch_objects{kind=\"Namespace\"}"), "{metrics}");
    assert!(metrics.contains("orch_api_request_duration_seconds_bucket"), "{metrics}");
    // Each loop's first round is full, and counted with its reason.
    assert!(metrics.contains("orch_leader_loop_full_rounds_total{name=\"scheduler\",reason=\"start\"} 1"), "{metrics}");
    assert_eq!(http_get(&http(NET, 1), "/healthz").map(|r| r.0), Some(200));

    // SIGTERM stops it cleanly; the data is there after a restart.
    assert!(d.terminate().success(), "orchd exits 0 on SIGTERM:\n{}", d.log());
    d.start();
    ready(&d);
    assert!(ok(&server, &["get", "ns"]).contains("shop"));
    assert!(d.terminate().success());
}

#[test]
fn orchctl_creates_all_or_nothing_deletes_every_target_and_fails_as_kubectl_does() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut d = started(root.path(), NET + 4);
    let server = d.api();
    let fails = |args: &[&str], stdin: Option<&str>| {
        let out = orchctl(&server, args, stdin);
        assert!(!out.status.success(), "orchctl {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    // create -f of several documents is one atomic write: one that exists creates none.
    let two = "apiVersion: v1\nkind: Namespace\nmetadata: {name: fresh}\n---\n\
               apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n";
    let (_, err) = fails(&["create", "-f", "-"], Some(two));
    assert!(err.starts_with("Error from server (AlreadyExists): batch command 1: "), "{err}");
    let (_, err) = fails(&["get", "ns", "fresh"], None);
    assert!(err.contains("NotFound"), "{err}");
    // A create carrying a resourceVersion is refused, as the Kubernetes API server refuses it.
    let (_, err) = fails(
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Namespace\nmetadata: {name: rv, resourceVersion: '5'}\n"),
    );
    assert!(
        err.contains("metadata.resourceVersion: Invalid value: 5: must not be set on an object to be created"),
        "{err}"
    );

    // -o yaml of a list is kubectl's v1 List; of one named object, the object.
    let yaml = ok(&server, &["get", "ns", "-o", "yaml"]);
    assert!(yaml.starts_with("apiVersion: v1\nitems:\n"), "{yaml}");
    assert!(yaml.contains("\nkind: List\n"), "{yaml}");
    let one = ok(&server, &["get", "ns", "default", "-o", "yaml"]);
    assert!(one.contains("kind: Namespace") && !one.contains("kind: List"), "{one}");

    // delete tries every target, prints each error, and fails at the end.
    orchctl(&server, &["create", "-f", "-"], Some("apiVersion: v1\nkind: Namespace\nmetadata: {name: gone}\n"));
    let (out, err) = fails(&["delete", "ns", "missing", "gone"], None);
    assert_eq!(out, "namespace/gone deleted\n");
    assert_eq!(err, "Error from server (NotFound): namespaces \"missing\" not found\nerror: 1 of 2 objects failed\n");
    assert_eq!(ok(&server, &["delete", "ns", "missing", "--ignore-not-found"]), "");

    // An object that is only marked for deletion is not reported deleted.
    ok(&server, &["apply", "-f", &nodes()]);
    // orchd's scheduler binds a pod to the node it fits (node-b's taint is not tolerated),
    // and says why a pod that fits no node waits.
    let unbound = |name: &str, cpu: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: busybox, \
             resources: {{requests: {{cpu: '{cpu}'}}}}}}]}}\n"
        )
    };
    orchctl(&server, &["create", "-f", "-"], Some(&(unbound("placed", "1") + "---\n" + &unbound("too-big", "3"))));
    eventually("the scheduler's decisions", || {
        let placed = ok(&server, &["get", "pod", "placed", "-o", "json"]);
        let waiting = ok(&server, &["get", "pod", "too-big", "-o", "json"]);
        let message =
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: batch}.";
        (placed.contains("\"nodeName\": \"node-a\"") && waiting.contains(message)).then_some(())
    });
    let pod = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}{extra}}}\nspec: {{nodeName: node-a, containers: [{{name: c, image: busybox}}]}}\n"
        )
    };
    orchctl(&server, &["create", "-f", "-"], Some(&pod("slow", "")));
    let marked = ok(&server, &["delete", "pod", "slow", "--wait=false"]);
    assert!(marked.starts_with("pod/slow marked for deletion"), "{marked}");
    let (out, err) = fails(&["delete", "pod", "slow", "--timeout", "1"], None);
    assert_eq!(out, "");
    assert!(err.contains("timed out waiting for the deletion of pod/slow"), "{err}");
    assert_eq!(ok(&server, &["delete", "pod", "slow", "--grace-period", "0"]), "pod/slow deleted\n");
    // By default it waits until the object is gone: here until its finalizer is removed.
    // (Applied, not created: apply removes only what the manifest applied last named.)
    orchctl(&server, &["apply", "-f", "-"], Some(&pod("held", ", finalizers: [example.com/hold]")));
    let waiting = std::process::Command::new(crate::harness::orchctl_bin())
        .args(["--server", &server, "delete", "pod", "held", "--grace-period", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("orchctl delete starts");
    eventually("the pod to be marked", || {
        let json = ok(&server, &["get", "pod", "held", "-o", "json"]);
        json.contains("deletionTimestamp").then_some(())
    });
    // The same pod applied without the finalizer: the update lets the deletion finish.
    let released = orchctl(&server, &["apply", "-f", "-"], Some(&pod("held", "")));
    assert!(released.status.success(), "{}", String::from_utf8_lossy(&released.stderr));
    let out = waiting.wait_with_output().expect("orchctl delete ends");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pod/held deleted\n");

    // Every target is deleted before any is waited for: the namespace, listed first, is held by
    // its content until the objects after it in the file (or the garbage collector) delete it.
    let web = web();
    // No agent runs here to finish the deletion of a bound pod (the simulated nodes will):
    // the web pods stay unscheduled (node-a cordoned, node-b's taint not tolerated), so that
    // deleting them is immediate.
    ok(&server, &["cordon", "node-a"]);
    ok(&server, &["apply", "-f", &web]);
    // rollout status follows the rollout as kubectl: here it stops at availability (no agent
    // makes the pods Ready) and gives up at its timeout.
    eventually("the new replicas", || {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&server, &["get", "deploy", "web", "-n", "shop", "-o", "json"])).expect("json");
        (v["status"]["updatedReplicas"] == 3 && v["status"]["observedGeneration"] == v["metadata"]["generation"])
            .then_some(())
    });
    let (out, err) = fails(&["rollout", "status", "deploy/web", "-n", "shop", "--timeout=1500ms"], None);
    assert_eq!(out, "Waiting for deployment \"web\" rollout to finish: 0 of 3 updated replicas are available...\n");
    assert!(err.contains("timed out waiting for the rollout of deployment \"web\""), "{err}");
    // With a progress deadline of a second, the controller marks the rollout stalled
    // (`Progressing=False`, `ProgressDeadlineExceeded`) and rollout status ends with kubectl's
    // error, long before its own timeout.
    let manifest = std::fs::read_to_string(&web).expect("the example");
    let stalled = manifest.replacen("  replicas: 3\n", "  replicas: 3\n  progressDeadlineSeconds: 1\n", 1);
    assert_ne!(stalled, manifest, "the example names its replicas");
    let applied = orchctl(&server, &["apply", "-f", "-"], Some(&stalled));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let (_, err) = fails(&["rollout", "status", "deploy/web", "-n", "shop", "--timeout=60s"], None);
    assert!(err.contains("deployment \"web\" exceeded its progress deadline"), "{err}");
    // orchd's garbage collector empties the terminating namespace meanwhile, so the objects
    // after it may be gone before orchctl deletes them (as with kubectl and Kubernetes'
    // namespace controller): not found is fine here.
    let deleted = ok(&server, &["delete", "-f", &web, "--timeout", "30", "--ignore-not-found"]);
    assert!(deleted.contains("namespace/shop deleted\n"), "{deleted}");
    let (_, err) = fails(&["get", "ns", "shop"], None);
    assert!(err.contains("NotFound"), "{err}");

    // Nothing listening: kubectl's message at once, not 30 seconds of retries.
    d.kill();
    let (_, err) = fails(&["get", "ns"], None);
    assert_eq!(
        err,
        format!("The connection to the server {server} was refused - did you specify the right host or port?\n")
    );
}

/// Scale (and rollout undo, the same path) is one command under the caller's write id: a
/// retried scale gets its first outcome and cannot undo a later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_scale_is_applied_once_and_a_retry_of_an_expired_session_never() {
    let root = tempfile::tempdir().expect("temp dir");
    let (mut d, server) = start_ready(root.path(), NET + 5).await;
    let client = Client::new([server.as_str()]).expect("client");
    let manifests = std::fs::read_to_string(web()).expect("reads");
    client.apply(&orch_core::parse_manifests(&manifests).expect("parses")).await.expect("applied");
    let web = ObjectKey::new(Kind::Deployment, "shop", "web");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{server}")).expect("endpoint").connect_lazy();
    let mut raw = orch_api::pb::orch_client::OrchClient::new(channel);
    let scale = orch_api::pb::ScaleRequest {
        id: Some(orch_api::convert::write_id(orch_core::ClientId(41), 1, 1)),
        key: Some(orch_api::convert::key_to_pb(&web)),
        replicas: 3,
    };
    let first = raw.scale(scale.clone()).await.expect("scaled").into_inner();
    client.scale(&web, 5).await.expect("scaled by another client");
    let retried = raw.scale(scale).await.expect("the retry answers").into_inner();
    assert_eq!(retried, first, "the first outcome, not a second write");
    let replicas = |o: &orch_core::Object| match o {
        orch_core::Object::Deployment(d) => d.spec.replicas,
        _ => None,
    };
    assert_eq!(replicas(&client.get(&web).await.expect("read").0), Some(5), "the later scale stands");
    // A retry from a client the server does not know (its session expired, or was never
    // seen): outcome unknown, not applied, and recorded, so that the first attempt arriving late
    // is not applied either; a first attempt of a new serial is.
    let mut unknown = orch_api::pb::ScaleRequest {
        id: Some(orch_api::convert::write_id(orch_core::ClientId(42), 7, 7)),
        key: Some(orch_api::convert::key_to_pb(&web)),
        replicas: 2,
    };
    if let Some(id) = unknown.id.as_mut() {
        id.retry = true;
    }
    let expired = Error::from(raw.scale(unknown.clone()).await.expect_err("outcome unknown"));
    let message = orch_core::ApplyError::SessionExpired { client: orch_core::ClientId(42), serial: 7 }.to_string();
    assert!(matches!(&expired, Error::OutcomeUnknown(m) if *m == message), "{expired:?}");
    assert_eq!(replicas(&client.get(&web).await.expect("read").0), Some(5), "not applied");
    if let Some(id) = unknown.id.as_mut() {
        id.retry = false;
    }
    let late = Error::from(raw.scale(unknown.clone()).await.expect_err("the recorded answer"));
    assert!(matches!(&late, Error::OutcomeUnknown(m) if *m == message), "{late:?}");
    unknown.id = Some(orch_api::convert::write_id(orch_core::ClientId(42), 8, 7));
    raw.scale(unknown).await.expect("a first attempt is applied");
    assert_eq!(replicas(&client.get(&web).await.expect("read").0), Some(2));
    // The rules are the state machine's, checked before proposing too.
    let refused = client.scale(&ObjectKey::new(Kind::Pod, "shop", "web"), 1).await.expect_err("a pod");
    assert!(matches!(&refused, Error::Invalid(m) if m.contains("key.kind: Unsupported value: \"Pod\"")), "{refused:?}");
    assert!(d.terminate().success());
}

const INVALID: &str = "apiVersion: v1
kind: Namespace
metadata: {name: fine}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken, namespace: fine}
spec:
  replicas: -1
  selector: {matchLabels: {app: b}}
  template:
    metadata: {labels: {app: b}}
    spec:
      containers: [{name: c, image: busybox}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_whole_and_named() {
    let root = tempfile::tempdir().expect("temp dir");
    let (_daemon, server) = start_ready(root.path(), NET + 1).await;

    // A multi-document manifest with one invalid document: nothing is created.
    let out = tokio::task::spawn_blocking({
        let server = server.clone();
        move || orchctl(&server, &["apply", "-f", "-"], Some(INVALID))
    })
    .await
    .expect("orchctl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err,
        "error: <stdin>: Deployment \"broken\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0\n"
    );
    let client = Client::new([server.as_str()]).expect("client");
    let missing = client.get(&ObjectKey::new(Kind::Namespace, "", "fine")).await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");

    // The same through the API, past orchctl's own checks: the server refuses the whole batch.
    let objects = orch_core::parse_manifests(INVALID).expect("parses");
    let refused = client.apply(&objects).await.expect_err("refused");
    assert!(
        matches!(&refused, Error::Invalid(m) if m.contains("batch command 1") && m.contains("spec.replicas")),
        "{refused:?}"
    );
    assert!(matches!(client.get(&ObjectKey::new(Kind::Namespace, "", "fine")).await, Err(Error::NotFound(_))));

    // An oversized request: refused with a clear error, the server carries on.
    let big = orch_core::parse_manifests(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: big\n  annotations: {{a: '{}'}}\n",
        "x".repeat(orch_api::REQUEST_BYTES_MAX)
    ))
    .expect("parses");
    let too_big = client.apply(&big).await.expect_err("too big");
    assert!(
        matches!(&too_big, Error::ResourceExhausted(m) if m.contains("larger than the server accepts")),
        "{too_big:?}"
    );
    // Sent anyway by a client without that check: the server refuses it.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{server}")).expect("endpoint").connect_lazy();
    let mut raw = orch_api::pb::orch_client::OrchClient::new(channel).max_encoding_message_size(64 << 20);
    let request = orch_api::pb::ApplyRequest {
        id: Some(orch_api::convert::write_id(orch_core::ClientId(7), 1, 1)),
        objects: big.iter().map(orch_api::convert::object_to_pb).collect(),
    };
    let refused = Error::from(raw.apply(request).await.expect_err("refused by the server"));
    assert!(
        matches!(&refused, Error::ResourceExhausted(m) if m.contains("decoded message length too large")),
        "{refused:?}"
    );

    // A malformed message (a field of the wrong wire type) does not crash orchd.
    malformed_create(&server).await;
    let status = client.status().await.expect("still serving");
    assert_eq!(status.id, 1);

    // The API's other errors, each with its code.
    let pod = orch_core::parse_manifests(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: busybox}]}\n",
    )
    .expect("parses")
    .remove(0);
    let created = client.create(&pod).await.expect("creates");
    assert!(matches!(client.create(&pod).await, Err(Error::AlreadyExists(_))));
    let (mut stale, read_at) = client.get(&pod.key()).await.expect("reads");
    assert!(read_at >= created.revision, "a get names the revision it read at");
    stale.meta_mut().resource_version = Some(orch_core::Revision(created.revision - 1));
    stale.meta_mut().labels.insert("changed", "yes");
    let conflict = client.update(&stale).await.expect_err("stale");
    assert!(matches!(&conflict, Error::Conflict(m) if m.contains("has been modified")), "{conflict:?}");
    let unknown_node = client.bind("default", "p", "node-x").await.expect_err("no such node");
    assert!(matches!(&unknown_node, Error::NotFound(m) if m == "nodes \"node-x\" not found"), "{unknown_node:?}");
    let node = orch_core::parse_manifests("apiVersion: v1\nkind: Node\nmetadata: {name: node-x}\n").expect("parses");
    client.apply(&node).await.expect("adds the node");
    // A bind is checked against the node when applied: a node that is not Ready takes no pod.
    let not_ready = client.bind("default", "p", "node-x").await.expect_err("not ready");
    assert!(
        matches!(&not_ready, Error::Conflict(m) if m.ends_with("pod p does not fit node \"node-x\": node(s) were not ready")),
        "{not_ready:?}"
    );
    let node = orch_core::parse_manifests(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-x}\nstatus: {capacity: {cpu: '1', pods: '10'}, \
         conditions: [{type: Ready, status: 'True'}]}\n",
    )
    .expect("parses");
    client.update_status(&node[0]).await.expect("the node is ready");
    client.bind("default", "p", "node-x").await.expect("binds");
    let (bound, _) = client.get(&pod.key()).await.expect("reads");
    assert_eq!(bound.as_pod().and_then(|p| p.spec.node_name.as_deref().map(str::to_owned)), Some("node-x".to_owned()));
    let (pods, _) = client.list(Kind::Pod, Some("default"), "", Some("node-x")).await.expect("lists by node");
    assert_eq!(pods.len(), 1);
    let mut with_status = bound.clone();
    if let orch_core::Object::Pod(p) = &mut with_status {
        std::sync::Arc::make_mut(p).status.message = Some("from the node agent".into());
    }
    client.update_status(&with_status).await.expect("updates the status");
    let json = client.get(&pod.key()).await.expect("reads").0.to_manifest();
    assert_eq!(json["status"]["message"], "from the node agent");
    assert!(matches!(
        client.delete(&ObjectKey::new(Kind::Pod, "default", "nope"), None).await,
        Err(Error::NotFound(_))
    ));

    // A watch sees a change made after it started.
    let (_, revision) = client.list(Kind::Namespace, None, "", None).await.expect("lists");
    let mut watch = client.watch(revision, "Namespace", "", "", "");
    let created =
        orch_core::parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: watched}\n").expect("parses");
    client.apply(&created).await.expect("applies");
    let event = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match watch.next().await {
                Some(Ok(WatchItem::Events { mut events, .. })) => return events.remove(0),
                Some(Ok(WatchItem::Progress(_))) => continue,
                other => panic!("watch ended: {other:?}"),
            }
        }
    })
    .await
    .expect("an event within the deadline");
    assert_eq!((event.event_type, event.object.meta().name.as_str()), (EventType::Added, "watched"));
    assert!(event.revision.0 > revision);
}

/// Sends `Create` with its `object` field (tag 2, a message) as a varint: the server must
/// answer an error, not crash.
async fn malformed_create(server: &str) {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Garbage {
        #[prost(uint64, tag = "2")]
        object: u64,
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{server}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/orch.api.v1.Orch/Create");
    let codec = tonic_prost::ProstCodec::<Garbage, Garbage>::default();
    let answer = grpc.unary(tonic::Request::new(Garbage { object: 42 }), path, codec).await;
    let status = answer.expect_err("a malformed message is refused");
    assert_ne!(status.code(), tonic::Code::Ok);
}

#[test]
fn a_saved_snapshot_starts_a_new_three_node_cluster() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut source = started(root.path(), NET + 2);
    ok(&source.api(), &["apply", "-f", &nodes(), "-f", &web()]);
    let before = ok(&source.api(), &["get", "deploy", "web", "-n", "shop", "-o", "json"]);
    let file = root.path().join("backup.snap");
    let saved = ok(&source.api(), &["snapshot", "save", file.to_str().expect("utf-8 path")]);
    assert!(saved.starts_with(&format!("Snapshot saved at {}", file.display())), "{saved}");
    let checked = ok(&source.api(), &["snapshot", "status", file.to_str().expect("utf-8 path")]);
    assert!(checked.contains("digest verified"), "{checked}");
    assert!(source.terminate().success());

    // The documented procedure: every member of the new cluster starts with the same file and
    // the same initial members.
    let net = NET + 3;
    let flags = [
        "--restore".to_owned(),
        file.display().to_string(),
        "--initial-members".to_owned(),
        crate::harness::initial_members(net, 3),
    ];
    let mut nodes: Vec<Daemon> = (1..=3).map(|i| Daemon::new(root.path(), net, i, &flags)).collect();
    for n in &mut nodes {
        n.start();
    }
    let servers = (1..=3).map(|i| crate::harness::api(net, i)).collect::<Vec<_>>().join(",");
    let after = eventually("the restored cluster to serve", || {
        let out = orchctl(&servers, &["get", "deploy", "web", "-n", "shop", "-o", "json"], None);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    // The same object: uid and creation kept, its revision no older (the restored cluster's
    // controllers may have written its status since).
    let (b, a): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&before).expect("json"), serde_json::from_str(&after).expect("json"));
    for field in ["uid", "creationTimestamp", "generation"] {
        assert_eq!(b["metadata"][field], a["metadata"][field], "{field}");
    }
    let rv = |v: &serde_json::Value| v["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse::<u64>().ok());
    assert!(rv(&a) >= rv(&b), "{a} after {b}");
    // It takes writes, with revisions after the snapshot's.
    let applied = ok(&servers, &["scale", "deploy/web", "-n", "shop", "--replicas", "4"]);
    assert_eq!(applied, "deployment.apps/web scaled\n");
    let scaled: serde_json::Value =
        serde_json::from_str(&ok(&servers, &["get", "deploy", "web", "-n", "shop", "-o", "json"])).expect("json");
    assert!(rv(&scaled) > rv(&a), "{scaled}");
    let members = ok(&servers, &["cluster", "members"]);
    assert_eq!(members.lines().count(), 4, "{members}");
}

/// With simulated nodes (`--simulated-nodes`), a Deployment rolls out to completion through
/// orchd's scheduler, ReplicaSet and Deployment controllers: `rollout status` follows it to
/// "successfully rolled out", a new template replaces every pod, and deleting the namespace
/// finishes (the simulated nodes confirm each pod stopped).
#[test]
fn a_deployment_rolls_out_on_simulated_nodes() {
    let root = tempfile::tempdir().expect("temp dir");
    let d = started_with(root.path(), NET + 6, &["--simulated-nodes", "2"]);
    let server = d.api();
    eventually("the simulated nodes", || {
        let nodes = ok(&server, &["get", "nodes", "-o", "name"]);
        (nodes == "node/sim-1\nnode/sim-2\n").then_some(())
    });
    let web = web();
    ok(&server, &["apply", "-f", &web]);
    let status = ok(&server, &["rollout", "status", "deploy/web", "-n", "shop", "--timeout", "60"]);
    assert!(status.ends_with("deployment \"web\" successfully rolled out\n"), "{status}");
    let table = ok(&server, &["get", "deploy", "web", "-n", "shop"]);
    assert!(table.contains("web    3/3     3            3"), "{table}");
    // A new template: every pod replaced, revision 2.
    let next =
        std::fs::read_to_string(&web).expect("reads").replace("image: python:3.12-slim", "image: python:3.13-slim");
    assert_ne!(next, std::fs::read_to_string(&web).expect("reads"), "the example names python:3.12-slim");
    let applied = orchctl(&server, &["apply", "-f", "-"], Some(&next));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let status = ok(&server, &["rollout", "status", "deploy/web", "-n", "shop", "--timeout", "60"]);
    assert!(status.ends_with("deployment \"web\" successfully rolled out\n"), "{status}");
    let pods: serde_json::Value =
        serde_json::from_str(&ok(&server, &["get", "pods", "-n", "shop", "-o", "json"])).expect("json");
    let images: Vec<&str> = pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
        .map(|p| p["spec"]["containers"][0]["image"].as_str().expect("image"))
        .collect();
    assert_eq!(images, vec!["python:3.13-slim"; 3]);
    let history = ok(&server, &["rollout", "history", "deploy/web", "-n", "shop"]);
    assert!(history.ends_with("1          <none>\n2          <none>\n"), "{history}");
    // The controllers' events, as Kubernetes': shown by `get events` and `describe`.
    eventually("the controllers' events", || {
        let events = ok(&server, &["get", "events", "-n", "shop"]);
        let all = ["Scheduled", "SuccessfulCreate", "SuccessfulDelete", "ScalingReplicaSet"];
        all.iter().all(|reason| events.contains(reason)).then_some(())
    });
    let events = ok(&server, &["get", "events", "-n", "shop"]);
    assert!(events.starts_with("LAST SEEN   TYPE     REASON"), "{events}");
    assert!(events.contains("Successfully assigned shop/web-"), "{events}");
    let described = ok(&server, &["describe", "deploy", "web", "-n", "shop"]);
    assert!(described.contains("ScalingReplicaSet") && described.contains("Scaled up replica set web-"), "{described}");
    // Only the Deployment's own events: the server selects them by involvedObject.
    assert!(!described.contains("Successfully assigned"), "{described}");
    let scheduled = ok(&server, &["get", "events", "-n", "shop", "--field-selector", "reason=Scheduled,type=Normal"]);
    let rows: Vec<&str> = scheduled.lines().skip(1).collect();
    assert!(!rows.is_empty() && rows.iter().all(|r| r.contains("Scheduled")), "{scheduled}");
    let refused = orchctl(&server, &["get", "events", "-n", "shop", "--field-selector", "spec.nodeName=n1"], None);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("field label not supported for events: \"spec.nodeName\""), "{said}");
    // orchd's endpoints controller lists the Service's Ready pods, its named port resolved.
    eventually("the service's endpoints", || {
        let out = orchctl(&server, &["get", "endpoints", "web", "-n", "shop", "-o", "json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let subset = &v["subsets"][0];
        let ips: Vec<&str> = subset["addresses"].as_array()?.iter().filter_map(|a| a["ip"].as_str()).collect();
        let listed =
            ips.len() == 3 && ips.iter().all(|ip| ip.starts_with("10.200.")) && v["subsets"].as_array()?.len() == 1;
        (listed && subset["ports"][0]["port"] == 8080 && subset["ports"][0]["name"] == "http").then_some(())
    });
    let deleted = ok(&server, &["delete", "-f", &web, "--timeout", "60", "--ignore-not-found"]);
    assert!(deleted.contains("namespace/shop deleted\n"), "{deleted}");
}

/// `orchctl delete --cascade`: `orphan` deletes a Deployment and keeps its ReplicaSet and
/// pods (no longer owned by it), `foreground` keeps the ReplicaSet until its pods are gone;
/// an unknown value is refused before anything is sent.
#[test]
fn delete_cascades_as_asked() {
    let root = tempfile::tempdir().expect("temp dir");
    let d = started_with(root.path(), NET + 9, &["--simulated-nodes", "2"]);
    let server = d.api();
    let web = web();
    ok(&server, &["apply", "-f", &web]);
    let status = ok(&server, &["rollout", "status", "deploy/web", "-n", "shop", "--timeout", "60"]);
    assert!(status.ends_with("successfully rolled out\n"), "{status}");
    let refused = orchctl(&server, &["delete", "deploy", "web", "-n", "shop", "--cascade", "sideways"], None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invalid --cascade \"sideways\""), "{refused:?}");

    let deleted = ok(&server, &["delete", "deploy", "web", "-n", "shop", "--cascade=orphan", "--timeout", "30"]);
    assert_eq!(deleted, "deployment.apps/web deleted\n");
    let sets: serde_json::Value =
        serde_json::from_str(&ok(&server, &["get", "rs", "-n", "shop", "-o", "json"])).expect("json");
    let sets = sets["items"].as_array().expect("items");
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert!(sets[0]["metadata"].get("ownerReferences").is_none(), "orphaned: {}", sets[0]);
    let set = sets[0]["metadata"]["name"].as_str().expect("name").to_owned();
    let pods = ok(&server, &["get", "pods", "-n", "shop", "-o", "name"]);
    assert_eq!(pods.lines().count(), 3, "the set's pods stay: {pods}");

    // Foreground: the set is only marked (a background delete removes it at once); waited
    // for, it goes after its pods, which are gone when it is.
    let marked = ok(&server, &["delete", "rs", &set, "-n", "shop", "--cascade=foreground", "--wait=false"]);
    assert!(marked.starts_with(&format!("replicaset.apps/{set} marked for deletion")), "{marked}");
    let gone = ok(
        &server,
        &["delete", "rs", &set, "-n", "shop", "--cascade=foreground", "--timeout", "60", "--ignore-not-found"],
    );
    assert!(gone.is_empty() || gone.ends_with("deleted\n"), "{gone}");
    assert_eq!(ok(&server, &["get", "pods", "-n", "shop", "-o", "name"]), "", "the pods went first");
}

/// `orchctl delete node` of a lost node (no agent will ever confirm its pods stopped) frees
/// its pods once the pod GC quarantine is over, terminating ones too, and so their namespace.
#[test]
fn deleting_a_lost_node_frees_its_pods_and_their_namespace() {
    let root = tempfile::tempdir().expect("temp dir");
    let d = started_with(root.path(), NET + 7, &["--pod-gc-quarantine-ms", "300"]);
    let server = d.api();
    ok(&server, &["apply", "-f", &nodes()]);
    let pods = "apiVersion: v1\nkind: Namespace\nmetadata: {name: lost}\n---\n\
                apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: lost}\nspec: {nodeName: node-a, containers: [{name: c, image: x}]}\n---\n\
                apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: lost}\nspec: {nodeName: node-a, containers: [{name: c, image: x}]}\n";
    let created = orchctl(&server, &["apply", "-f", "-"], Some(pods));
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    // b is terminating, held for the agent that would confirm it stopped; the namespace too.
    let marked = ok(&server, &["delete", "pod", "b", "-n", "lost", "--wait=false"]);
    assert!(marked.starts_with("pod/b marked for deletion"), "{marked}");
    let marked = ok(&server, &["delete", "ns", "lost", "--wait=false"]);
    assert!(marked.contains("namespace/lost"), "{marked}");
    assert_eq!(ok(&server, &["delete", "node", "node-a"]), "node/node-a deleted\n");
    let deleted = ok(&server, &["delete", "ns", "lost", "--timeout", "30", "--ignore-not-found"]);
    assert!(deleted.is_empty() || deleted.contains("namespace/lost"), "{deleted}");
    let gone = orchctl(&server, &["get", "ns", "lost"], None);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"), "the namespace went with its pods");
}

/// Polls `check` every 50 ms until it gives a value, for at most 30 s.
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Node liveness end to end: heartbeats through the API keep a node Ready; once they stop it
/// is marked `Unknown` with the unreachable `NoExecute` taint, its pods are evicted when their
/// toleration runs out and the ReplicaSet replaces them on a live (simulated, heartbeating)
/// node; a heartbeat brings it back, untainted. Heartbeats for a bad name or an unknown node
/// are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_heartbeating_loses_its_pods_to_live_nodes() {
    let root = tempfile::tempdir().expect("temp dir");
    let flags = ["--simulated-nodes", "1", "--node-monitor-grace-period-ms", "3000"];
    let (_daemon, server) = start_ready_with(root.path(), NET + 8, &flags).await;
    let client = Client::new([server.as_str()]).expect("client");
    let bad = client.heartbeat("Not_A_Name").await;
    assert!(matches!(&bad, Err(Error::Invalid(m)) if m.starts_with("node: Invalid value: \"Not_A_Name\"")), "{bad:?}");
    let ghost = client.heartbeat("ghost").await;
    assert!(matches!(&ghost, Err(Error::NotFound(m)) if m == "nodes \"ghost\" not found"), "{ghost:?}");

    // sim-1 is cordoned while the pods are placed, so that they go to node-x.
    let sim = ObjectKey::new(Kind::Node, "", "sim-1");
    until("sim-1 to register", || async { client.get(&sim).await.ok() }).await;
    let cordon = {
        let server = server.clone();
        move |verb: &'static str| {
            let server = server.clone();
            tokio::task::spawn_blocking(move || ok(&server, &[verb, "sim-1"]))
        }
    };
    cordon("cordon").await.expect("cordon");
    let node_x = "apiVersion: v1\nkind: Node\nmetadata: {name: node-x}\nstatus:\n  capacity: {cpu: '4', memory: 8Gi, pods: '10'}\n  \
                  conditions: [{type: Ready, status: 'True'}]\n";
    client.create(&orch_core::parse_manifests(node_x).expect("valid")[0]).await.expect("node-x");
    // node-x's agent heartbeats until the pods are placed.
    let beating = tokio::spawn({
        let client = client.clone();
        async move {
            loop {
                let _ = client.heartbeat("node-x").await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let web = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  \
               selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      \
               tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}]\n      \
               containers: [{name: c, image: x}]\n";
    client.create(&orch_core::parse_manifests(web).expect("valid")[0]).await.expect("web");
    let pods_on = |node: &'static str| {
        let client = client.clone();
        async move {
            let (pods, _) = client.list(Kind::Pod, Some("default"), "app=web", Some(node)).await.ok()?;
            Some(pods.into_iter().filter_map(|p| p.as_pod().cloned()).collect::<Vec<_>>())
        }
    };
    let placed = until("both pods on node-x", || async {
        pods_on("node-x").await.filter(|p| p.len() == 2 && p.iter().all(|p| p.metadata.deletion_timestamp.is_none()))
    })
    .await;
    let node_x_key = ObjectKey::new(Kind::Node, "", "node-x");
    let ready_of = |node: orch_core::Object| match node {
        orch_core::Object::Node(n) => {
            let ready = n.status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status);
            (ready, n.spec.taints.iter().map(|t| t.key.to_string()).collect::<Vec<_>>())
        }
        other => panic!("not a node: {other:?}"),
    };
    let (ready, taints) = ready_of(client.get(&node_x_key).await.expect("node-x").0);
    assert_eq!(
        (ready, taints.len()),
        (Some(orch_core::meta::ConditionStatus::True), 0),
        "kept Ready by its heartbeats"
    );
    beating.abort();
    cordon("uncordon").await.expect("uncordon");

    until("node-x to be lost and tainted", || async {
        let (ready, taints) = ready_of(client.get(&node_x_key).await.ok()?.0);
        (ready == Some(orch_core::meta::ConditionStatus::Unknown) && taints == ["node.kubernetes.io/unreachable"])
            .then_some(())
    })
    .await;
    until("the pods to be replaced on sim-1", || async {
        let evicted = pods_on("node-x").await?;
        let replaced = pods_on("sim-1").await?;
        let running = |p: &orch_core::Pod| p.status.phase == Some(orch_core::core_v1::PodPhase::Running);
        (evicted.len() == 2
            && evicted.iter().all(|p| p.metadata.deletion_timestamp.is_some())
            && replaced.iter().filter(|p| running(p) && p.metadata.deletion_timestamp.is_none()).count() == 2)
            .then_some(())
    })
    .await;
    assert!(placed.iter().all(|p| p.spec.tolerations.len() == 2), "the 2 s toleration and the default not-ready one");
    let status = {
        let server = server.clone();
        tokio::task::spawn_blocking(move || ok(&server, &["rollout", "status", "deployment/web", "--timeout", "30s"]))
    };
    assert!(status.await.expect("status").contains("successfully rolled out"));

    // Heard again: Ready, and the taint goes.
    client.heartbeat("node-x").await.expect("heartbeat");
    until("node-x to be back", || async {
        let _ = client.heartbeat("node-x").await;
        let (ready, taints) = ready_of(client.get(&node_x_key).await.ok()?.0);
        (ready == Some(orch_core::meta::ConditionStatus::True) && taints.is_empty()).then_some(())
    })
    .await;
}
