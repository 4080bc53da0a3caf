//! What pods take from ConfigMaps and Secrets: variables, volumes, and waiting for them.

use super::*;

fn object(yaml: &str) -> Object {
    let mut obj = parse_manifests(yaml).expect("manifest").pop().expect("one object");
    apply_defaults(&mut obj);
    obj
}

fn config_map(name: &str, data: &str) -> Object {
    object(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\ndata: {data}"))
}

fn secret(name: &str, string_data: &str) -> Object {
    object(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\nstringData: {string_data}"
    ))
}

fn env_of(actions: &[Action], container: &str) -> Option<Vec<(String, String)>> {
    actions.iter().find_map(|a| match a {
        Action::StartContainer { pod, container: i, env, .. } if pod.spec.containers[*i].name == container => {
            Some(env.clone())
        }
        _ => None,
    })
}

fn files_of(volumes: &Volumes, name: &str) -> Vec<(String, String)> {
    let v = volumes.volumes.iter().find(|v| v.name == name).expect("the volume");
    match &v.source {
        VolumeSource::Files { files, .. } => {
            files.iter().map(|f| (f.path.clone(), String::from_utf8_lossy(&f.data).into_owned())).collect()
        }
        VolumeSource::EmptyDir { .. } => Vec::new(),
    }
}

/// The volumes of the first `UpdateVolumes` among `actions`.
fn update_of(actions: &[Action]) -> Option<Arc<Volumes>> {
    actions
        .iter()
        .find_map(|a| if let Action::UpdateVolumes { volumes, .. } = a { Some(volumes.clone()) } else { None })
}

/// The volumes the first start among `actions` carries.
fn started_with(actions: &[Action]) -> Option<Arc<Volumes>> {
    actions
        .iter()
        .find_map(|a| if let Action::StartContainer { volumes, .. } = a { Some(volumes.clone()) } else { None })
}

fn events(actions: &[Action], reason: &str) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(r) if r.reason == reason => Some(r.message.clone()),
            _ => None,
        })
        .collect()
}

const ENV: &str = "  containers:\n  - name: app\n    command: [sleep, '$(GREETING)']\n    envFrom: [{prefix: CM_, configMapRef: {name: settings}}]\n    env:\n    - {name: GREETING, valueFrom: {configMapKeyRef: {name: settings, key: greeting}}}\n    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}\n    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}\n    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}\n    - {name: HOST, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}\n    - {name: BOTH, value: '$(POD)@$(NODE) $(MISSING)'}\n    - {name: OPT, valueFrom: {configMapKeyRef: {name: absent, key: k, optional: true}}}\n";

/// A container whose variables name a ConfigMap or Secret that is not there waits with
/// `CreateContainerConfigError` (the kubelet's message), and starts once it is, with every
/// variable resolved.
#[test]
fn variables_come_from_config_maps_secrets_and_the_pod() {
    let mut w = World::synced();
    w.agent.configs_synced(w.now);
    let p = pod("web", ENV);
    w.put(p.clone());
    let actions = w.settle();
    assert_eq!(starts(&actions), 0);
    assert_eq!(w.waiting_reason(&p, "app").as_deref(), Some(CREATE_CONTAINER_CONFIG_ERROR));
    let message = w.status(&p, "app").state.waiting.and_then(|s| s.message).map(|m| m.to_string());
    assert_eq!(message.as_deref(), Some("configmap \"settings\" not found"));
    assert_eq!(events(&actions, "Failed"), ["Error: configmap \"settings\" not found"]);

    w.agent.config(&config_map("settings", "{greeting: hello, level: '3', 'bad key!': x}"), w.now);
    let actions = w.settle();
    assert_eq!(starts(&actions), 0, "the secret is still missing");
    assert_eq!(events(&actions, "Failed"), ["Error: secret \"creds\" not found"]);

    w.agent.config(&secret("creds", "{password: hunter2}"), w.now);
    let actions = w.settle();
    let env = env_of(&actions, "app").expect("started");
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("CM_greeting"), Some("hello"));
    assert_eq!(get("CM_level"), Some("3"));
    assert_eq!(get("CM_bad key!"), None, "a key that is no variable name is skipped");
    assert_eq!(get("GREETING"), Some("hello"));
    assert_eq!(get("PASSWORD"), Some("hunter2"));
    assert_eq!(get("POD"), Some("web"));
    assert_eq!(get("NODE"), Some("n1"));
    assert_eq!(get("IP"), Some("10.244.0.2"));
    assert_eq!(get("HOST"), Some("192.168.0.1"));
    assert_eq!(get("BOTH"), Some("web@n1 $(MISSING)"));
    assert_eq!(get("OPT"), None, "an optional reference to nothing sets nothing");
    assert!(w.status(&p, "app").state.running.is_some());
}

/// Until the first lists of ConfigMaps and Secrets are in, a pod that takes from them waits
/// (ContainerCreating, not an error); one that takes nothing does not.
#[test]
fn pods_wait_for_the_first_config_lists_only_when_they_need_them() {
    let mut w = World::synced();
    let needs = pod("needs", ENV);
    let plain = pod("plain", ONE);
    w.put(needs.clone());
    w.put(plain.clone());
    let actions = w.settle();
    assert_eq!(starts(&actions), 1);
    assert_eq!(w.waiting_reason(&needs, "app").as_deref(), Some(CONTAINER_CREATING));
    w.agent.config(&config_map("settings", "{greeting: hi}"), w.now);
    w.agent.config(&secret("creds", "{password: x}"), w.now);
    assert_eq!(starts(&w.settle()), 0, "not synced yet");
    w.agent.configs_synced(w.now);
    let actions = w.settle();
    assert_eq!(
        env_of(&actions, "app").expect("started").iter().find(|(k, _)| k == "GREETING").map(|(_, v)| v.as_str()),
        Some("hi")
    );
}

const VOLUMES: &str = "  containers:\n  - name: app\n    command: [sleep, '1000']\n    volumeMounts: [{name: cfg, mountPath: /etc/cfg}, {name: creds, mountPath: /etc/creds}, {name: scratch, mountPath: /scratch}]\n  volumes:\n  - {name: cfg, configMap: {name: settings, items: [{key: greeting, path: conf/greeting.txt, mode: 0600}]}}\n  - {name: creds, secret: {secretName: creds}}\n  - {name: scratch, emptyDir: {medium: Memory, sizeLimit: 1Mi}}\n";

/// Volumes are handed to the runtime with the first start, a new version when a source
/// changes, and kept as they were when a source goes. A missing source holds the pod in
/// ContainerCreating with a `FailedMount` event, once per message.
#[test]
fn volumes_follow_their_sources() {
    let mut w = World::synced();
    w.agent.configs_synced(w.now);
    w.agent.config(&secret("creds", "{password: hunter2, user: admin}"), w.now);
    let p = pod("web", VOLUMES);
    w.put(p.clone());
    let actions = w.settle();
    assert_eq!(starts(&actions), 0);
    assert_eq!(w.waiting_reason(&p, "app").as_deref(), Some(CONTAINER_CREATING));
    assert_eq!(
        events(&actions, "FailedMount"),
        ["MountVolume.SetUp failed for volume \"cfg\" : configmap \"settings\" not found"]
    );
    w.at(w.now + 60_000);
    assert!(events(&w.settle(), "FailedMount").is_empty(), "said once");

    w.agent.config(&config_map("settings", "{greeting: hello, other: x}"), w.now);
    let actions = w.settle();
    let volumes = started_with(&actions).expect("started");
    assert_eq!(volumes.generation, 1);
    assert_eq!(files_of(&volumes, "cfg"), [("conf/greeting.txt".to_owned(), "hello".to_owned())]);
    let cfg = volumes.volumes.iter().find(|v| v.name == "cfg").expect("cfg");
    assert!(matches!(&cfg.source, VolumeSource::Files { secret: false, files } if files[0].mode == 0o600));
    assert_eq!(
        files_of(&volumes, "creds"),
        [("password".to_owned(), "hunter2".to_owned()), ("user".to_owned(), "admin".to_owned())]
    );
    let scratch = volumes.volumes.iter().find(|v| v.name == "scratch").expect("scratch");
    assert_eq!(scratch.source, VolumeSource::EmptyDir { memory: true, size_limit: Some(1024 * 1024) });

    // A key the pod does not project changes: nothing to do.
    w.agent.config(&config_map("settings", "{greeting: hello, other: y}"), w.now);
    assert!(!w.settle().iter().any(|a| matches!(a, Action::UpdateVolumes { .. })));
    w.agent.config(&config_map("settings", "{greeting: bonjour}"), w.now);
    let actions = w.settle();
    let update = update_of(&actions).expect("an update");
    assert_eq!(update.generation, 2);
    assert_eq!(files_of(&update, "cfg"), [("conf/greeting.txt".to_owned(), "bonjour".to_owned())]);
    assert_eq!(starts(&actions), 0, "running containers are not restarted");

    // The source goes: the files stay as they were.
    w.agent.config_gone(&ObjectKey::new(Kind::ConfigMap, "default", "settings"), w.now);
    let actions = w.settle();
    assert!(!actions.iter().any(|a| matches!(a, Action::UpdateVolumes { .. })));
    assert!(events(&actions, "FailedMount").len() <= 1);
}

/// An optional source that is missing projects nothing and holds nothing up.
#[test]
fn an_optional_volume_source_may_be_missing() {
    let mut w = World::synced();
    w.agent.configs_synced(w.now);
    let spec = "  containers:\n  - name: app\n    command: [sleep, '1000']\n    volumeMounts: [{name: cfg, mountPath: /etc/cfg}]\n  volumes:\n  - {name: cfg, configMap: {name: settings, optional: true}}\n";
    let p = pod("web", spec);
    w.put(p.clone());
    let actions = w.settle();
    assert_eq!(starts(&actions), 1);
    w.agent.config(&config_map("settings", "{a: '1'}"), w.now);
    let actions = w.settle();
    let update = update_of(&actions).expect("an update once it exists");
    assert_eq!(files_of(&update, "cfg"), [("a".to_owned(), "1".to_owned())]);
}

/// A restarted agent adopts a running pod: its volumes are brought up to date at once (a
/// ConfigMap may have changed while the agent was down), without restarting anything.
#[test]
fn an_adopted_pods_volumes_are_brought_up_to_date() {
    let mut w = World::new(Settings { host_ip: Some("192.168.0.1".into()), ..Settings::new("n1") });
    let spec = "  containers:\n  - name: app\n    command: [sleep, '1000']\n    volumeMounts: [{name: cfg, mountPath: /etc/cfg}]\n  volumes:\n  - {name: cfg, configMap: {name: settings}}\n";
    let p = pod("web", spec);
    let found = vec![Found { name: "app".into(), attempt: 1, started_ms: T0 - 1_000, exit: None }];
    w.agent.adopt(key(&p), uid(&p), Some("10.244.0.9".into()), found, T0);
    w.live.insert((uid(&p), "app".to_owned()), 1);
    w.agent.configs_synced(T0);
    w.agent.config(&config_map("settings", "{a: '2'}"), T0);
    w.put(p.clone());
    w.agent.synced(T0);
    let actions = w.settle();
    let update = update_of(&actions).expect("the adopted pod's volumes are written");
    assert_eq!(files_of(&update, "cfg"), [("a".to_owned(), "2".to_owned())]);
    assert_eq!(starts(&actions), 0, "nothing restarted");
}
