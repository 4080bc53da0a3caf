//! orchd with real `orch-node` agents: pods run as processes, restart, are probed, report
//! their status, are adopted by a restarted agent, and leave nothing behind.
//!
//! Most tests run their agents with `--host-network`, on loopback, so each pod listens on a
//! port of its own; `pod_networks` runs each host in a network namespace of its own, its pods
//! in theirs through CNI.

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

/// Whether the tests run as root (whose agents mount tmpfs volumes).
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1)) == Some("0")
}

fn read_pid(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

#[test]
fn an_agent_runs_a_pod_restarts_it_adopts_it_after_a_restart_and_cleans_up_after_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let d = control_plane(root.path(), NET, &[]);
    let server = d.api();
    let mut agent = Agent::new(root.path(), "t41", "127.0.41.11", &server, &["--host-network"]);
    agent.start();
    let node = eventually("node t41 registered and Ready", || {
        let out = orchctl(&server, &["get", "node", "t41", "-o", "json"], None);
        let n: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let ready = n["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(n)
    });
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    assert_eq!(node["status"]["addresses"][0]["address"], "127.0.41.11");
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "t41");

    let pidfile = root.path().join("worker.pid");
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: worker}}\nspec:\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: main\n    image: local\n    command: [sh, -c, 'echo $$$$ > {}; exec sleep 1000']\n",
        pidfile.display()
    );
    apply(&server, &yaml);
    let p = until(&server, "worker", "Running and Ready", running_and_ready);
    assert_eq!(p["status"]["podIP"], "127.0.41.11", "a pod on the host network has the host's address");
    assert_eq!(p["status"]["hostIP"], "127.0.41.11");
    assert_eq!(p["spec"]["nodeName"], "t41");
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
    let mut agent = Agent::new(root.path(), "t42", "127.0.42.11", &server, &["--host-network"]);
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

    // Logs and exec through the agent's endpoint.
    let logs = ok(&server, &["logs", "hello"]);
    assert!(logs.contains("orch-hello listening on port 18042"), "{logs}");
    let out = orchctl(&server, &["exec", "hello", "--", "sh", "-c", "echo port $PORT; exit 3"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "port 18042");
    assert_eq!(out.status.code(), Some(3), "exec exits with the command's code");
    let none = orchctl(&server, &["logs", "hello", "--previous"], None);
    assert!(!none.status.success(), "no previous run yet");

    std::fs::write(&unready, "").expect("touch");
    let p = until(&server, "hello", "not Ready", |p| condition(p, "Ready").as_deref() == Some("False"));
    assert_eq!(restarts(&p), 0, "readiness restarts nothing");
    std::fs::remove_file(&unready).expect("rm");
    until(&server, "hello", "Ready again", running_and_ready);

    std::fs::write(&unhealthy, "").expect("touch");
    until(&server, "hello", "restarted by its liveness probe", |p| restarts(p) >= 1);
    std::fs::remove_file(&unhealthy).expect("rm");
    until(&server, "hello", "Ready after the restart", running_and_ready);
    // The run before the restart keeps its log; --tail cuts it.
    let previous = ok(&server, &["logs", "hello", "--previous", "--tail", "1"]);
    assert_eq!(previous.trim(), "orch-hello listening on port 18042");
    ok(&server, &["delete", "pod", "hello"]);
    eventually("the pod to be gone", || pod(&server, "hello").is_none().then_some(()));
}

#[test]
fn pods_the_agent_cannot_run_say_why_and_the_others_run_on() {
    let root = tempfile::tempdir().expect("tempdir");
    let d = control_plane(root.path(), NET + 2, &[]);
    let server = d.api();
    let mut agent = Agent::new(root.path(), "t43", "127.0.43.11", &server, &["--host-network"]);
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
    // `logs -f` follows a run to its end, then returns.
    apply(
        &server,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: ticker}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: main, image: local, command: [sh, -c, 'sleep 1; for i in 1 2 3; do echo tick $$i; sleep 0.3; done']}\n",
    );
    until(&server, "ticker", "Running", |p| p["status"]["phase"] == "Running");
    let followed = ok(&server, &["logs", "-f", "ticker"]);
    assert_eq!(followed, "tick 1\ntick 2\ntick 3\n");
}

/// ConfigMaps and Secrets reach a container as variables and as files mounted in its own
/// mount namespace (a Secret's on a tmpfs), the files follow the objects, and a container
/// whose ConfigMap is missing waits, then starts once it is there. Nothing is left behind.
#[test]
fn config_maps_and_secrets_reach_containers_as_variables_and_files() {
    let root = tempfile::tempdir().expect("tempdir");
    let d = control_plane(root.path(), NET + 6, &[]);
    let server = d.api();
    // No CNI plugins where it looks: the agent falls back to the host's network and says so.
    let no_cni = root.path().join("no-cni");
    let cni_flag = format!("--cni-bin-dir={}", no_cni.display());
    let mut agent = Agent::new(root.path(), "t47", "127.0.47.11", &server, &[&cni_flag]);
    agent.start();
    eventually("the warning that pods share the host's network", || {
        agent.log().contains("pods share the host's network: no pod network (").then_some(())
    });
    if is_root() {
        let log = agent.log();
        assert!(log.contains("the CNI plugins bridge, host-local and loopback are not in"), "{log}");
        assert!(log.contains(&no_cni.display().to_string()), "{log}");
    }
    // The agent reports its disk (an agent on the host's network has no NetworkUnavailable).
    let node = eventually("node t47 with its DiskPressure", || {
        let out = orchctl(&server, &["get", "node", "t47", "-o", "json"], None);
        let n: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        n["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "DiskPressure").then_some(n)
    });
    let conditions = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
    assert!(!conditions.iter().any(|c| c["type"] == "NetworkUnavailable"), "{conditions:?}");
    assert_eq!(node["status"]["nodeInfo"]["operatingSystem"], "linux");
    assert!(node["status"]["nodeInfo"]["kubeletVersion"].as_str().is_some_and(|v| v.starts_with("orch-node ")));
    let mnt = root.path().join("mnt");
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{greeting: hello, mode: fast}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{password: hunter2}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: cfg}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    \
         command: [sh, -c, 'echo \"$GREETING $PASSWORD $POD $APP_mode\"; exec sleep 1000']\n    \
         envFrom: [{{prefix: APP_, configMapRef: {{name: settings}}}}]\n    \
         env:\n    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: settings, key: greeting}}}}}}\n    \
         - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}\n    \
         - {{name: POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}\n    \
         volumeMounts:\n    - {{name: cfg, mountPath: '{mnt}/cfg'}}\n    - {{name: creds, mountPath: '{mnt}/creds'}}\n    \
         - {{name: scratch, mountPath: '{mnt}/scratch'}}\n  \
         volumes:\n  - {{name: cfg, configMap: {{name: settings}}}}\n  - {{name: creds, secret: {{secretName: creds, defaultMode: 0400}}}}\n  \
         - {{name: scratch, emptyDir: {{}}}}\n",
        mnt = mnt.display()
    );
    apply(&server, &yaml);
    let running = until(&server, "cfg", "Running", |p| p["status"]["phase"] == "Running");
    assert_eq!(running["status"]["podIP"], "127.0.47.11", "on the host's network: {running}");
    assert_eq!(running["status"]["hostIP"], "127.0.47.11");
    let logs = eventually("the first line", || Some(ok(&server, &["logs", "cfg"])).filter(|l| !l.is_empty()));
    assert_eq!(logs, "hello hunter2 cfg fast\n");
    let exec = |cmd: &str| {
        let out = orchctl(&server, &["exec", "cfg", "--", "sh", "-c", cmd], None);
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let cfg = mnt.join("cfg");
    assert_eq!(exec(&format!("cat {}/greeting", cfg.display())), "hello");
    assert_eq!(exec(&format!("stat -L -c %a {}/creds/password", mnt.display())), "400");
    assert_eq!(exec(&format!("cat {}/creds/password", mnt.display())), "hunter2");
    exec(&format!("echo scratch > {}/scratch/f", mnt.display()));
    assert_eq!(exec(&format!("cat {}/scratch/f", mnt.display())), "scratch");
    if is_root() {
        assert_eq!(exec(&format!("stat -f -c %T {}/creds", mnt.display())), "tmpfs", "a Secret stays off the disk");
    }
    // The mounts are the container's own: on the node the mount paths are empty.
    assert_eq!(std::fs::read_dir(&cfg).expect("the mount path was made").count(), 0);
    // The pod's directory (its run specs hold the Secret's value, its volumes the files) is
    // the agent's user's alone.
    assert!(!agent.pod_dirs().is_empty());
    for dir in agent.pod_dirs() {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).expect("pod dir").permissions());
        assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
    }

    // The ConfigMap changes: so do its files (the variables keep the start's values).
    apply(&server, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {greeting: bonjour}\n");
    eventually("the file to follow the ConfigMap", || {
        (exec(&format!("cat {}/greeting", cfg.display())) == "bonjour").then_some(())
    });
    assert_eq!(exec(&format!("ls {}", cfg.display())), "greeting", "a key that went is no file any more");

    // A missing ConfigMap holds a container back with the kubelet's reason, until it exists.
    apply(
        &server,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: waits}\nspec:\n  containers:\n  - name: main\n    command: [sleep, '1000']\n    envFrom: [{configMapRef: {name: later}}]\n",
    );
    let reason = |p: &serde_json::Value| container(p)["state"]["waiting"]["reason"].as_str().map(str::to_owned);
    let p = until(&server, "waits", "CreateContainerConfigError", |p| {
        reason(p).as_deref() == Some("CreateContainerConfigError")
    });
    assert_eq!(container(&p)["state"]["waiting"]["message"], "configmap \"later\" not found");
    apply(&server, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later}\ndata: {x: '1'}\n");
    until(&server, "waits", "Running", |p| p["status"]["phase"] == "Running");

    ok(&server, &["delete", "pod", "cfg", "waits"]);
    eventually("the pods to be gone", || {
        (pod(&server, "cfg").is_none() && pod(&server, "waits").is_none()).then_some(())
    });
    eventually("no directory or mount left", || {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        (agent.pod_dirs().is_empty() && !mounts.contains(&*root.path().to_string_lossy())).then_some(())
    });
}

#[test]
fn a_container_over_its_memory_limit_is_reported_oom_killed() {
    let root = tempfile::tempdir().expect("tempdir");
    let d = control_plane(root.path(), NET + 3, &[]);
    let server = d.api();
    let mut agent = Agent::new(root.path(), "t44", "127.0.44.11", &server, &["--host-network"]);
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
    let mut a = Agent::new(root.path(), "t45a", "127.0.45.11", &server, &["--host-network"]);
    let mut b = Agent::new(root.path(), "t45b", "127.0.45.12", &server, &["--host-network"]);
    a.start();
    b.start();
    for n in ["t45a", "t45b"] {
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
    let first = eventually("the pod running on a node", || running_on("t45a").or_else(|| running_on("t45b")));
    let (gone, other) = if first["spec"]["nodeName"] == "t45a" { (&mut a, "t45b") } else { (&mut b, "t45a") };
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

/// A process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pod_networks_give_each_pod_its_own_address_reachable_from_every_host() {
    use std::process::{Command, Stdio};

    use crate::harness::{Lan, lan_ip};

    let root = tempfile::tempdir().expect("tempdir");
    let subnet = "192.168.251";
    let lan = Lan::new(subnet, &["cp", "h1", "h2"]);
    let cp = lan_ip(subnet, 0);
    let server = format!("{cp}:7100");
    let in_ns = |ns: &str, bin: &Path| {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}")).arg(bin);
        c
    };
    let log = std::fs::File::create(root.path().join("orchd.log")).expect("log");
    let _orchd = Killed(
        in_ns(&lan.ns("cp"), Path::new(env!("CARGO_BIN_EXE_orchd")))
            .arg("--data-dir")
            .arg(root.path().join("cp"))
            .args(["--api-addr", &server, "--raft-addr", &format!("{cp}:7101"), "--http-addr", &format!("{cp}:7102")])
            .args(["--heartbeat-ms", "50", "--election-timeout-ms", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("orchd starts"),
    );
    let cp_ns = lan.ns("cp");
    let ctl = |args: &[&str], stdin: Option<&str>| crate::harness::orchctl_in(Some(&cp_ns), &server, args, stdin);
    let json = |args: &[&str]| -> Option<serde_json::Value> {
        let out = ctl(args, None);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    };
    eventually("orchd to answer", || ctl(&["get", "nodes"], None).status.success().then_some(()));
    let mut agents: Vec<Agent> = ["h1", "h2"]
        .iter()
        .enumerate()
        .map(|(i, h)| Agent::new(root.path(), h, &lan_ip(subnet, i + 1), &server, &[]).in_netns(&lan.ns(h)))
        .collect();
    for a in &mut agents {
        a.start();
    }
    let cidrs: Vec<String> = ["h1", "h2"]
        .iter()
        .map(|h| {
            eventually(&format!("node {h} Ready with a pod CIDR"), || {
                let n = json(&["get", "node", h, "-o", "json"])?;
                let ready =
                    n["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
                ready.then(|| n["spec"]["podCIDR"].as_str().map(str::to_owned)).flatten()
            })
        })
        .collect();
    assert_ne!(cidrs[0], cidrs[1]);
    // With a pod CIDR and no failed pod network, the agents say the network is available.
    for h in ["h1", "h2"] {
        eventually(&format!("node {h} NetworkUnavailable=False"), || {
            let n = json(&["get", "node", h, "-o", "json"])?;
            let c = n["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "NetworkUnavailable")?.clone();
            (c["status"] == "False" && c["reason"] == "NetworkPluginReady").then_some(())
        });
    }
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 3\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: hello\n        image: local\n        command: [{bin}]\n        ports: [{{containerPort: 8080}}]\n        resources: {{requests: {{cpu: 100m}}}}\n        readinessProbe: {{httpGet: {{path: /ready, port: 8080}}, periodSeconds: 1}}\n",
        bin = sibling_bin("orch-hello").display()
    );
    assert!(ctl(&["apply", "-f", "-"], Some(&yaml)).status.success());
    let pods = eventually("3 pods Running and Ready", || {
        let list = json(&["get", "pods", "-l", "app=web", "-o", "json"])?;
        let items = list["items"].as_array()?.clone();
        (items.len() == 3 && items.iter().all(running_and_ready)).then_some(items)
    });
    let ips: std::collections::BTreeSet<&str> = pods.iter().filter_map(|p| p["status"]["podIP"].as_str()).collect();
    assert_eq!(ips.len(), 3, "each pod has an address of its own: {ips:?}");
    let nodes: std::collections::BTreeSet<&str> = pods.iter().filter_map(|p| p["spec"]["nodeName"].as_str()).collect();
    assert_eq!(nodes.len(), 2, "the pods run on both agents");
    let hello = sibling_bin("orch-hello");
    let get = |ns: &str, ip: &str| {
        let out = in_ns(ns, &hello).args(["get", &format!("{ip}:8080"), "/"]).output().expect("orch-hello get runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // Every pod answers on its own address and port, from either host.
    for p in &pods {
        let (name, ip) =
            (p["metadata"]["name"].as_str().unwrap_or_default(), p["status"]["podIP"].as_str().unwrap_or_default());
        for host in ["h1", "h2"] {
            assert_eq!(get(&lan.ns(host), ip), format!("hello from {name}"), "from {host}");
        }
    }
    // A pod reaches a pod on the other node, from its own namespace.
    let on = |node: &str| pods.iter().find(|p| p["spec"]["nodeName"] == node).expect("a pod there");
    let (a, b) = (on("h1"), on("h2"));
    let prefix = |agent: &Agent| orch_node::network::netns_prefix(&agent.name, &agent.dir.join("network"));
    let a_ns = format!("{}{}", prefix(&agents[0]), a["metadata"]["uid"].as_str().unwrap_or_default());
    let b_name = b["metadata"]["name"].as_str().unwrap_or_default();
    assert_eq!(get(&a_ns, b["status"]["podIP"].as_str().unwrap_or_default()), format!("hello from {b_name}"));
    // Routes: the cluster range is a blackhole under the nodes' pod CIDRs.
    let routes =
        String::from_utf8_lossy(&Command::new("ip").args(["-n", &lan.ns("h1"), "route"]).output().expect("ip").stdout)
            .into_owned();
    assert!(routes.contains("blackhole 10.244.0.0/16"), "{routes}");
    assert!(routes.contains(&format!("{} via {}", cidrs[1], lan_ip(subnet, 2))), "{routes}");
    // CNI CHECK on adoption: the agent of the node with two of the pods is killed, the
    // network of one of them broken (its eth0 deleted), and the agent started again. Both are
    // adopted as they run (the same run: its container ID and restart count); CHECK passes
    // for one and fails for the other, in the agent's log.
    let run = |p: &serde_json::Value| (container(p)["containerID"].as_str().map(str::to_owned), restarts(p));
    let (i, host) =
        if pods.iter().filter(|p| p["spec"]["nodeName"] == "h1").count() == 2 { (0, "h1") } else { (1, "h2") };
    let theirs: Vec<&serde_json::Value> = pods.iter().filter(|p| p["spec"]["nodeName"] == host).collect();
    assert_eq!(theirs.len(), 2);
    let (broken, kept) = (theirs[0], theirs[1]);
    let uid_of = |p: &serde_json::Value| p["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    let broken_ns = format!("{}{}", prefix(&agents[i]), uid_of(broken));
    agents[i].kill();
    let out = Command::new("ip").args(["-n", &broken_ns, "link", "del", "eth0"]).output().expect("ip runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    agents[i].start();
    let line = |log: &str, what: &str, uid: &str| log.lines().filter(|l| l.contains(what) && l.contains(uid)).count();
    let log = eventually("both adopted pods' CNI CHECKs in the agent's log", || {
        let log = agents[i].log();
        (line(&log, "network passes the CNI CHECK", &uid_of(kept))
            + line(&log, "network fails the CNI CHECK", &uid_of(broken))
            == 2)
            .then_some(log)
    });
    assert_eq!(line(&log, "CNI CHECK", &uid_of(kept)), 1, "{log}");
    assert_eq!(line(&log, "CNI CHECK", &uid_of(broken)), 1, "{log}");
    for p in [broken, kept] {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        let now = json(&["get", "pod", name, "-o", "json"]).expect("the pod");
        assert_eq!(run(&now), run(p), "pod {name} adopted as it ran, not restarted: {now}");
    }
    let other_host = if host == "h1" { "h2" } else { "h1" };
    let kept_name = kept["metadata"]["name"].as_str().unwrap_or_default();
    let kept_ip = kept["status"]["podIP"].as_str().unwrap_or_default();
    assert_eq!(get(&lan.ns(other_host), kept_ip), format!("hello from {kept_name}"));
    // Deleted: no pod, namespace or address left.
    assert!(ctl(&["delete", "deploy", "web"], None).status.success());
    eventually("the pods and their namespaces gone", || {
        let list = json(&["get", "pods", "-o", "json"])?;
        let left = std::fs::read_dir("/run/netns")
            .map(|d| {
                d.flatten()
                    .filter(|e| agents.iter().any(|a| e.file_name().to_string_lossy().starts_with(&prefix(a))))
                    .count()
            })
            .unwrap_or(0);
        (list["items"].as_array().is_none_or(Vec::is_empty) && left == 0).then_some(())
    });
    for a in &agents {
        let results = std::fs::read_dir(a.dir.join("network/results")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(results, 0, "no kept CNI result outlives its pod's DEL");
        let ipam = a.dir.join("network/ipam");
        let reserved: Vec<String> = std::fs::read_dir(&ipam)
            .map(|d| {
                d.flatten()
                    .flat_map(|e| {
                        std::fs::read_dir(e.path())
                            .map(|f| {
                                f.flatten().map(|x| x.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert!(reserved.iter().all(|f| f == "lock" || f.starts_with("last_reserved_ip")), "{reserved:?}");
    }
    drop(agents);
}

#[test]
fn the_development_mode_runs_the_example_on_its_agents() {
    use std::process::{Command, Stdio};

    use crate::harness::Lan;

    let root = tempfile::tempdir().expect("tempdir");
    // In a network namespace of its own: the agents' bridges and routes stay there.
    let lan = Lan::new("192.168.252", &["dev"]);
    let ns = lan.ns("dev");
    let log = std::fs::File::create(root.path().join("orchd.log")).expect("log");
    let _orchd = Killed(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg(env!("CARGO_BIN_EXE_orchd"))
            .args(["--dev-agents", "2", "--data-dir"])
            .arg(root.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("orchd starts"),
    );
    let server = "127.0.0.1:7100";
    let ctl = |args: &[&str]| crate::harness::orchctl_in(Some(&ns), server, args, None);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_ascii_lowercase();
    eventually("two dev agents Ready", || {
        let out = String::from_utf8_lossy(&ctl(&["get", "nodes"]).stdout).into_owned();
        (1..=2)
            .all(|i| out.lines().any(|l| l.starts_with(&format!("{host}-{i} ")) && l.contains(" Ready")))
            .then_some(())
    });
    let example = format!("{}/../examples/hello.yaml", env!("CARGO_MANIFEST_DIR"));
    let out = ctl(&["apply", "-f", &example]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pods = eventually("the example's pods Running and Ready", || {
        let out = ctl(&["get", "pods", "-n", "demo", "-o", "json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let items = list["items"].as_array()?.clone();
        (items.len() == 2 && items.iter().all(running_and_ready)).then_some(items)
    });
    let nodes: std::collections::BTreeSet<&str> = pods.iter().filter_map(|p| p["spec"]["nodeName"].as_str()).collect();
    assert_eq!(nodes.len(), 2, "one pod on each agent: {nodes:?}");
    for p in &pods {
        let ip = p["status"]["podIP"].as_str().unwrap_or_default();
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg(sibling_bin("orch-hello"))
            .args(["get", &format!("{ip}:8080"), "/"])
            .output()
            .expect("orch-hello get");
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("hello from {name}"));
    }
    assert!(ctl(&["delete", "namespace", "demo"]).status.success());
    eventually("the example's pods gone", || {
        let prefixes: Vec<String> = (1..=2)
            .map(|i| {
                let dir = root.path().join(format!("data/agents/{i}/network"));
                orch_node::network::netns_prefix(&format!("{host}-{i}"), &dir)
            })
            .collect();
        let left = std::fs::read_dir("/run/netns")
            .map(|d| {
                d.flatten().filter(|e| prefixes.iter().any(|p| e.file_name().to_string_lossy().starts_with(p))).count()
            })
            .unwrap_or(0);
        (left == 0 && !ctl(&["get", "ns", "demo"]).status.success()).then_some(())
    });
}
