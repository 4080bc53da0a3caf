//! orchd with real `orch-node` agents: pods run as processes, restart, are probed, report
//! their status, are adopted by a restarted agent, and leave nothing behind.
//!
//! Pods share the host's network here (pod networks are not built yet), so each pod listens
//! on a port of its own.

use std::path::Path;

use crate::harness::{Agent, Daemon, eventually, http, http_get, ok, orchctl, sibling_bin};

const NET: u8 = 41;

/// A single-node orchd on network `net` with `flags`, ready.
fn control_plane(root: &Path, net: u8, flags: &[&str]) -> Daemon {
    let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
    let mut d = Daemon::new(root, net, 1, &flags);
    d.start();
    eventually("orchd to be ready", || http_get(&http(d.net, d.id), "/readyz").filter(|(c, _)| *c == 200).map(|_| ()));
    d
}

fn apply(server: &str, yaml: &str) {
    let out = orchctl(server, &["apply", "-f", "-"], Some(yaml));
    assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The pod as JSON, if it exists.
fn pod(server: &str, name: &str) -> Option<serde_json::Value> {
    let out = orchctl(server, &["get", "pod", name, "-o", "json"], None);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

fn condition(p: &serde_json::Value, type_: &str) -> Option<String> {
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str())
        .map(str::to_owned)
}

fn container(p: &serde_json::Value) -> serde_json::Value {
    p["status"]["containerStatuses"][0].clone()
}

/// The first container's restart count (0 is left out of the JSON).
fn restarts(p: &serde_json::Value) -> i64 {
    container(p)["restartCount"].as_i64().unwrap_or(0)
}

/// Waits until the pod satisfies `f`; the pod.
fn until(server: &str, name: &str, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    eventually(&format!("pod {name}: {what}"), || pod(server, name).filter(|p| f(p)))
}

fn running_and_ready(p: &serde_json::Value) -> bool {
    p["status"]["phase"] == "Running" && condition(p, "Ready").as_deref() == Some("True")
}

fn alive(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

fn read_pid(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

#[test]
fn an_agent_runs_a_pod_restarts_it_adopts_it_after_a_restart_and_cleans_up_after_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let d = control_plane(root.path(), NET, &[]);
    let server = d.api();
    let mut agent = Agent::new(root.path(), "n1", "127.0.41.11", &server, &[]);
    agent.start();
    let node = eventually("node n1 registered and Ready", || {
        let out = orchctl(&server, &["get", "node", "n1", "-o", "json"], None);
        let n: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let ready = n["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(n)
    });
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    assert_eq!(node["status"]["addresses"][0]["address"], "127.0.41.11");
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "n1");

    let pidfile = root.path().join("worker.pid");
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: worker}}\nspec:\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: main\n    image: local\n    command: [sh, -c, 'echo $$$$ > {}; exec sleep 1000']\n",
        pidfile.display()
    );
    apply(&server, &yaml);
    let p = until(&server, "worker", "Running and Ready", running_and_ready);
    assert_eq!(p["status"]["podIP"], "127.0.41.11", "a pod on the host network has the host's address");
    assert_eq!(p["status"]["hostIP"], "127.0.41.11");
    assert_eq!(p["spec"]["nodeName"], "n1");
    let first = eventually("the pid file", || read_pid(&pidfile));
    assert!(alive(&first));

    // Killing the process restarts it.
    let _ = std::process::Command::new("kill").args(["-9", &first]).status();
    let p = until(&server, "worker", "restarted once", |p| restarts(p) == 1 && running_and_ready(p));
    assert_eq!(container(&p)["lastState"]["terminated"]["exitCode"], 137);
    let second = eventually("a new pid", || read_pid(&pidfile).filter(|p| *p != first));

    // A restarted agent adopts the pod: same process, no restart.
    agent.kill();
    agent.start();
    eventually("the agent to adopt the pod", || agent.log().contains("adopting a pod").then_some(()));
    // A pod created after the restart runs: by then the agent has taken up its list.
    apply(
        &server,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: later}\nspec:\n  containers:\n  - {name: main, image: local, command: [sleep, '1000']}\n",
    );
    until(&server, "later", "Running", running_and_ready);
    let p = pod(&server, "worker").expect("worker");
    assert_eq!(restarts(&p), 1, "the adopted pod was restarted: {}", agent.log());
    assert_eq!(read_pid(&pidfile).as_deref(), Some(second.as_str()));
    assert!(alive(&second));

    // Deleted: stopped, gone from the store, nothing left behind.
    ok(&server, &["delete", "pod", "worker", "later"]);
    eventually("the pods to be gone", || {
        (pod(&server, "worker").is_none() && pod(&server, "later").is_none()).then_some(())
    });
    eventually("no process, directory or cgroup left", || {
        (!alive(&second) && agent.pod_dirs().is_empty() && agent.pod_cgroups().is_empty()).then_some(())
    });
}

#[test]
fn probes_restart_a_container_and_take_a_pod_out_of_ready() {
    let root = tempfile::tempdir().expect("tempdir");
    let d = control_plane(root.path(), NET + 1, &[]);
    let server = d.api();
    let mut agent = Agent::new(root.path(), "n1", "127.0.42.11", &server, &[]);
    agent.start();
    let unhealthy = root.path().join("unhealthy");
    let unready = root.path().join("unready");
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: hello}}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: hello\n    image: local\n    command: [{bin}]\n    env:\n    - {{name: PORT, value: '18042'}}\n    - {{name: UNHEALTHY_FILE, value: '{unhealthy}'}}\n    - {{name: UNREADY_FILE, value: '{unready}'}}\n    ports: [{{containerPort: 18042, name: http}}]\n    livenessProbe: {{httpGet: {{path: /healthz, port: http}}, initialDelaySeconds: 1, periodSeconds: 1, failureThreshold: 2}}\n    readinessProbe: {{httpGet: {{path: /ready, port: 18042}}, periodSeconds: 1, failureThreshold: 1}}\n",
        bin = sibling_bin("orch-hello").display(),
        unhealthy = unhealthy.display(),
        unready = unready.display(),
    );
    apply(&server, &yaml);
    until(&server, "hello", "Running and Ready", running_and_ready);
    let (code, body) = eventually("an answer", || http_get("127.0.42.11:18042", "/"));
    assert_eq!((code, body.trim()), (200, "hello from hello"));

    std::fs::write(&unready, "").expect("touch");
    let p = until(&server, "hello", "not Ready", |p| condition(p, "Ready").as_deref() == Some("False"));
    assert_eq!(restarts(&p), 0, "readiness restarts nothing");
    std::fs::remove_file(&unready).expect("rm");
    until(&server, "hello", "Ready again", running_and_ready);

    std::fs::write(&unhealthy, "").expect("touch");
    until(&server, "hello", "restarted by its liveness probe", |p| restarts(p) >= 1);
    std::fs::remove_file(&unhealthy).expect("rm");
    until(&server, "hello", "Ready after the restart", running_and_ready);
    ok(&server, &["delete", "pod", "hello"]);
    eventually("the pod to be gone", || pod(&server, "hello").is_none().then_some(()));
}

#[test]
fn pods_the_agent_cannot_run_say_why_and_the_others_run_on() {
    let root = tempfile::tempdir().expect("tempdir");
    let d = control_plane(root.path(), NET + 2, &[]);
    let server = d.api();
    let mut agent = Agent::new(root.path(), "n1", "127.0.43.11", &server, &[]);
    agent.start();
    let ready_file = root.path().join("ok");
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: good}}\nspec:\n  containers:\n  - name: main\n    image: local\n    command: [sleep, '1000']\n    readinessProbe: {{exec: {{command: [test, -f, '{ready}']}}, periodSeconds: 1}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: nocmd}}\nspec:\n  containers:\n  - {{name: main, image: nginx}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: missing}}\nspec:\n  containers:\n  - {{name: main, image: local, command: [no-such-command-for-orch]}}\n",
        ready = ready_file.display()
    );
    apply(&server, &yaml);
    let reason = |p: &serde_json::Value| container(p)["state"]["waiting"]["reason"].as_str().map(str::to_owned);
    let p = until(&server, "nocmd", "CreateContainerConfigError", |p| {
        reason(p).as_deref() == Some("CreateContainerConfigError")
    });
    assert_eq!(p["status"]["phase"], "Pending");
    let p = until(&server, "missing", "RunContainerError", |p| reason(p).as_deref() == Some("RunContainerError"));
    let message = container(&p)["state"]["waiting"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("executable file not found"), "{message}");
    // The exec readiness probe holds the good pod back until its file is there.
    let p = until(&server, "good", "Running", |p| p["status"]["phase"] == "Running");
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
    std::fs::write(&ready_file, "").expect("touch");
    until(&server, "good", "Ready", running_and_ready);
    let events = ok(&server, &["get", "events", "--field-selector", "involvedObject.name=good"]);
    assert!(events.contains("ImageNotPulled"), "{events}");
}

#[test]
fn a_container_over_its_memory_limit_is_reported_oom_killed() {
    let root = tempfile::tempdir().expect("tempdir");
    let d = control_plane(root.path(), NET + 3, &[]);
    let server = d.api();
    let mut agent = Agent::new(root.path(), "n1", "127.0.44.11", &server, &[]);
    agent.start();
    eventually("the agent's cgroups", || (!agent.cgroup_roots().is_empty()).then_some(()));
    // `tail -n 1` keeps the one line it has read so far, which has no end.
    apply(
        &server,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: hog}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: local\n    command: [sh, -c, 'head -c 500000000 /dev/zero | tail -n 1']\n    resources: {limits: {memory: 32Mi}}\n",
    );
    let p = until(&server, "hog", "Failed", |p| p["status"]["phase"] == "Failed");
    assert_eq!(container(&p)["state"]["terminated"]["reason"], "OOMKilled", "{p}");
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
}

#[test]
fn a_stopped_agents_pod_is_replaced_on_another_agent() {
    let root = tempfile::tempdir().expect("tempdir");
    let d = control_plane(root.path(), NET + 4, &["--node-monitor-grace-period-ms", "2000"]);
    let server = d.api();
    let mut a = Agent::new(root.path(), "a", "127.0.45.11", &server, &[]);
    let mut b = Agent::new(root.path(), "b", "127.0.45.12", &server, &[]);
    a.start();
    b.start();
    for n in ["a", "b"] {
        eventually("both nodes", || {
            ok(&server, &["get", "nodes"]).lines().any(|l| l.starts_with(n) && l.contains(" Ready")).then_some(())
        });
    }
    apply(
        &server,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: one}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: one}}\n  template:\n    metadata: {labels: {app: one}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      tolerations:\n      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}\n      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 1}\n      containers:\n      - {name: main, image: local, command: [sleep, '1000']}\n",
    );
    let running_on = |node: &str| {
        let out = ok(&server, &["get", "pods", "-l", "app=one", "-o", "json"]);
        let list: serde_json::Value = serde_json::from_str(&out).ok()?;
        list["items"]
            .as_array()?
            .iter()
            .find(|p| {
                p["spec"]["nodeName"] == node && running_and_ready(p) && p["metadata"]["deletionTimestamp"].is_null()
            })
            .cloned()
    };
    let first = eventually("the pod running on a node", || running_on("a").or_else(|| running_on("b")));
    let (gone, other) = if first["spec"]["nodeName"] == "a" { (&mut a, "b") } else { (&mut b, "a") };
    gone.kill();
    let replaced = eventually("the pod replaced on the other agent", || running_on(other));
    assert_ne!(replaced["metadata"]["uid"], first["metadata"]["uid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_under_a_uid_spares_another_pod_of_that_name() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = root.path().to_owned();
    let d = tokio::task::spawn_blocking(move || control_plane(&root_path, NET + 5, &[])).await.expect("orchd");
    let client = orch_api::Client::new([d.api()]).expect("client");
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec:\n  containers:\n  - {name: c, image: local, command: [sleep, '1']}\n";
    let pod = orch_core::manifest::parse_manifests(yaml).expect("manifest").pop().expect("pod");
    client.create(&pod).await.expect("created");
    let key = orch_core::ObjectKey::new(orch_core::Kind::Pod, "default", "p");
    let (live, _) = client.get(&key).await.expect("get");
    let uid = live.meta().uid.expect("uid");
    let other = orch_core::ids::Uid::derive(1, 99);
    let refused = client.delete_uid(&key, other, Some(0)).await.expect_err("another uid");
    assert!(matches!(refused, orch_api::Error::Conflict(_)), "{refused:?}");
    assert!(client.get(&key).await.is_ok());
    client.delete_uid(&key, uid, Some(0)).await.expect("deleted under its uid");
    assert!(matches!(client.get(&key).await, Err(orch_api::Error::NotFound(_))));
}
