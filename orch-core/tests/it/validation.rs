//! Validation messages name the field path and the rule, and a rejected object writes nothing.

use orch_core::Command;

use crate::fixtures::{Harness, obj};

/// Creates the manifest and returns the error message.
fn rejected(yaml: &str) -> String {
    let mut h = Harness::new();
    h.err(Command::Create(obj(yaml)))
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
";

fn deployment_with(from: &str, to: &str) -> String {
    assert!(DEPLOYMENT.contains(from), "{from}");
    DEPLOYMENT.replacen(from, to, 1)
}

#[test]
fn the_base_fixture_is_valid() {
    let mut h = Harness::new();
    h.ok(Command::Create(obj(DEPLOYMENT)));
}

#[test]
fn replicas_must_not_be_negative() {
    assert_eq!(
        rejected(&deployment_with("replicas: 2", "replicas: -1")),
        "Deployment \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    );
}

#[test]
fn container_name_is_required() {
    assert_eq!(
        rejected(&deployment_with("{name: web, image: nginx}", "{image: nginx}")),
        "Deployment \"web\" is invalid: spec.template.spec.containers[0].name: Required value"
    );
}

#[test]
fn several_errors_are_listed_together() {
    let e = rejected(&deployment_with("{name: web, image: nginx}", "{name: Web_1, ports: [{containerPort: 0}]}"));
    assert_eq!(
        e,
        "Deployment \"web\" is invalid: [spec.template.spec.containers[0].name: Invalid value: \"Web_1\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?'), spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive]"
    );
}

#[test]
fn names_follow_dns_rules() {
    let e = rejected("apiVersion: v1\nkind: Pod\nmetadata: {name: Web}\nspec: {containers: [{name: c, image: x}]}\n");
    assert!(
        e.starts_with("Pod \"Web\" is invalid: metadata.name: Invalid value: \"Web\": a lowercase RFC 1123 subdomain"),
        "{e}"
    );
    let e = rejected("apiVersion: v1\nkind: Service\nmetadata: {name: 1web}\nspec: {ports: [{port: 80}]}\n");
    assert!(
        e.starts_with("Service \"1web\" is invalid: metadata.name: Invalid value: \"1web\": a DNS-1035 label"),
        "{e}"
    );
    let e = rejected("apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}\n");
    assert!(e.contains("metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label"), "{e}");
    let e = rejected("apiVersion: v1\nkind: Namespace\nmetadata: {labels: {a: b}}\n");
    assert!(e.contains("metadata.name: Required value: name or generateName is required"), "{e}");
}

#[test]
fn label_keys_and_values_are_checked() {
    let e = rejected(&deployment_with("metadata: {name: web}", "metadata: {name: web, labels: {'-bad': ok}}"));
    assert!(
        e.contains("metadata.labels: Invalid value: \"-bad\": name part must consist of alphanumeric characters"),
        "{e}"
    );
    let long = "v".repeat(64);
    let e =
        rejected(&deployment_with("metadata: {name: web}", &format!("metadata: {{name: web, labels: {{k: {long}}}}}")));
    assert!(e.contains("must be no more than 63 characters"), "{e}");
    let mut h = Harness::new();
    h.ok(Command::Create(obj(&deployment_with(
        "metadata: {name: web}",
        "metadata: {name: web, labels: {'example.com/team': a}}",
    ))));
}

#[test]
fn selector_must_match_template_labels() {
    let e = rejected(&deployment_with("metadata: {labels: {app: web}}", "metadata: {labels: {app: api}}"));
    assert_eq!(
        e,
        "Deployment \"web\" is invalid: spec.template.metadata.labels: Invalid value: \"app=api\": `selector` does not match template `labels`"
    );
    let e = rejected(&deployment_with("selector: {matchLabels: {app: web}}", "selector: {}"));
    assert!(e.contains("spec.selector: Required value"), "{e}");
    let e = rejected(&deployment_with(
        "selector: {matchLabels: {app: web}}",
        "selector: {matchLabels: {app: web}, matchExpressions: [{key: tier, operator: In}]}",
    ));
    assert!(e.contains("spec.selector.matchExpressions[0].values: Required value"), "{e}");
}

#[test]
fn rolling_update_bounds_are_checked() {
    let e = rejected(&deployment_with(
        "  template:",
        "  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}\n  template:",
    ));
    assert_eq!(
        e,
        "Deployment \"web\" is invalid: spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
    );
    let e = rejected(&deployment_with("  template:", "  strategy: {rollingUpdate: {maxSurge: 'lots'}}\n  template:"));
    assert!(e.contains("spec.strategy.rollingUpdate.maxSurge: Invalid value: \"lots\": a valid percent string"), "{e}");
    let e =
        rejected(&deployment_with("  template:", "  strategy: {rollingUpdate: {maxUnavailable: '150%'}}\n  template:"));
    assert!(e.contains("maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"), "{e}");
    let e = rejected(&deployment_with(
        "  template:",
        "  strategy: {type: Recreate, rollingUpdate: {maxSurge: 1}}\n  template:",
    ));
    assert!(
        e.contains("spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"),
        "{e}"
    );
}

#[test]
fn template_restart_policy_must_be_always() {
    let e = rejected(&deployment_with("    spec:\n", "    spec:\n      restartPolicy: Never\n"));
    assert!(
        e.contains("spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""),
        "{e}"
    );
}

#[test]
fn ports_are_checked() {
    let e = rejected(&deployment_with(
        "{name: web, image: nginx}",
        "{name: web, image: nginx, ports: [{containerPort: 70000}]}",
    ));
    assert!(e.contains("spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"), "{e}");
    let e = rejected("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, nodePort: 80}]}\n");
    assert!(e.contains("spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"), "{e}");
    let e = rejected(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 80}]}\n",
    );
    assert!(e.contains("spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"), "{e}");
    let e = rejected("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}, {port: 81}]}\n");
    assert!(e.contains("spec.ports[0].name: Required value"), "{e}");
    let e = rejected("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {}\n");
    assert!(e.contains("spec.ports: Required value"), "{e}");
}

#[test]
fn probes_are_checked() {
    let probe = |p: &str| {
        deployment_with("{name: web, image: nginx}", &format!("{{name: web, image: nginx, livenessProbe: {p}}}"))
    };
    let e = rejected(&probe("{periodSeconds: 5}"));
    assert!(
        e.contains("spec.template.spec.containers[0].livenessProbe: Required value: must specify a handler type"),
        "{e}"
    );
    let e = rejected(&probe("{exec: {command: ['true']}, tcpSocket: {port: 80}}"));
    assert!(e.contains("livenessProbe: Forbidden: may not specify more than 1 handler type"), "{e}");
    let e = rejected(&probe("{tcpSocket: {port: 80}, successThreshold: 2}"));
    assert!(e.contains("livenessProbe.successThreshold: Invalid value: 2: must be 1"), "{e}");
    let e = rejected(&probe("{httpGet: {port: 0}}"));
    assert!(e.contains("livenessProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive"), "{e}");
    let e = rejected(&probe("{httpGet: {port: 'Not_A_Name'}}"));
    assert!(e.contains("livenessProbe.httpGet.port: Invalid value: \"Not_A_Name\""), "{e}");
    let e = rejected(&probe("{exec: {command: ['true']}, periodSeconds: 0}"));
    assert!(e.contains("livenessProbe.periodSeconds: Invalid value: 0: must be greater than or equal to 1"), "{e}");
}

#[test]
fn requests_may_not_exceed_limits() {
    let e = rejected(&deployment_with(
        "{name: web, image: nginx}",
        "{name: web, image: nginx, resources: {requests: {cpu: '2'}, limits: {cpu: 500m}}}",
    ));
    assert!(e.contains("spec.template.spec.containers[0].resources.requests.cpu: Invalid value: \"2\": must be less than or equal to cpu limit of 500m"), "{e}");
    let e = rejected(&deployment_with(
        "{name: web, image: nginx}",
        "{name: web, image: nginx, resources: {requests: {memory: '-1Mi'}}}",
    ));
    assert!(
        e.contains("resources.requests.memory: Invalid value: \"-1Mi\": must be greater than or equal to 0"),
        "{e}"
    );
}

#[test]
fn tolerations_and_taints_are_checked() {
    let e = rejected(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: x}]\n  tolerations: [{key: k, operator: Exists, value: v}]\n",
    );
    assert!(
        e.contains(
            "spec.tolerations[0].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'"
        ),
        "{e}"
    );
    let e = rejected("apiVersion: v1\nkind: Node\nmetadata: {name: n}\nspec: {taints: [{key: k}]}\n");
    assert!(e.contains("spec.taints[0].effect: Required value"), "{e}");
}

#[test]
fn defaults_are_applied_as_kubernetes_does() {
    let mut h = Harness::new();
    h.ok(Command::Create(obj(DEPLOYMENT)));
    let d = h.state.get(&orch_core::ObjectKey::new(orch_core::Kind::Deployment, "default", "web")).cloned();
    let Some(orch_core::Object::Deployment(d)) = d else { panic!("stored deployment") };
    let ru = d.spec.strategy.rolling_update.clone().unwrap_or_default();
    assert_eq!(ru.max_surge, Some(orch_core::IntOrString::Str("25%".into())));
    assert_eq!(ru.max_unavailable, Some(orch_core::IntOrString::Str("25%".into())));
    assert_eq!(d.spec.revision_history_limit, Some(10));
    assert_eq!(d.spec.progress_deadline_seconds, Some(600));
    assert_eq!(d.metadata.namespace.as_deref(), Some("default"));
    let pod = &d.spec.template.spec;
    assert_eq!(pod.restart_policy, Some(orch_core::core_v1::RestartPolicy::Always));
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    assert_eq!(pod.containers[0].image_pull_policy, Some(orch_core::core_v1::PullPolicy::Always), "untagged image");
}

/// A status write is validated against the stored object: addresses are addresses, container
/// statuses name containers of the spec, condition types are names, and a pod that finished
/// keeps its phase. A refused write changes nothing.
#[test]
fn status_writes_are_validated() {
    use orch_core::core_v1::{ContainerStatus, NodeAddress, PodPhase};
    use orch_core::{Object, Resource};
    let mut h = Harness::new();
    h.ok(Command::Create(crate::fixtures::pod("default", "p")));
    h.ok(Command::Create(crate::fixtures::node("n1")));
    let stored = |s: &orch_core::State, kind: orch_core::Kind, ns: &str, name: &str| {
        s.get(&orch_core::ObjectKey::new(kind, ns, name)).cloned().expect("stored")
    };
    let with_pod = |h: &Harness, edit: &dyn Fn(&mut orch_core::Pod)| {
        let Object::Pod(mut p) = stored(&h.state, orch_core::Kind::Pod, "default", "p") else { unreachable!("a pod") };
        edit(std::sync::Arc::make_mut(&mut p));
        Command::UpdateStatus(std::sync::Arc::unwrap_or_clone(p).into_object())
    };
    type Edit<'a> = &'a dyn Fn(&mut orch_core::Pod);
    let ip = |s: &str| orch_core::core_v1::PodIp { ip: s.into() };
    let cases: [(Edit<'_>, &str); 8] = [
        (
            &|p| p.status.pod_ip = Some("10.0.0.300".into()),
            "status.podIP: Invalid value: \"10.0.0.300\": must be a valid IPv4 address",
        ),
        (
            &|p| {
                p.status.pod_ip = Some("10.0.0.3".into());
                p.status.pod_ips = vec![ip("10.0.0.4")];
            },
            "status.podIPs[0].ip: Invalid value: \"10.0.0.4\": must match `status.podIP`",
        ),
        (
            &|p| {
                p.status.pod_ip = Some("10.0.0.3".into());
                p.status.pod_ips = vec![ip("10.0.0.3"), ip("10.0.0.4")];
            },
            "status.podIPs: Invalid value: [\"10.0.0.3\", \"10.0.0.4\"]: may specify no more than one IP for each IP family",
        ),
        (
            &|p| p.status.pod_ips = vec![ip("x")],
            "status.podIPs[0].ip: Invalid value: \"x\": must be a valid IPv4 address",
        ),
        (&|p| p.status.pod_ips = vec![ip("")], "status.podIPs[0].ip: Required value"),
        (
            &|p| p.status.container_statuses = vec![ContainerStatus { name: "nope".into(), ..Default::default() }],
            "status.containerStatuses[0].name: Not found: \"nope\": no container of that name in spec.containers",
        ),
        (
            &|p| {
                p.status.container_statuses =
                    vec![ContainerStatus { name: "c".into(), restart_count: -1, ..Default::default() }]
            },
            "status.containerStatuses[0].restartCount: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            &|p| {
                p.status.conditions.push(orch_core::core_v1::PodCondition::new(
                    "bad type!",
                    orch_core::meta::ConditionStatus::True,
                    orch_core::Time::from_millis(0),
                ));
            },
            "status.conditions[0].type: Invalid value: \"bad type!\"",
        ),
    ];
    for (edit, message) in cases {
        let before = h.state.clone();
        let err = h.err(with_pod(&h, edit));
        assert!(err.contains(message), "{err}\nwanted: {message}");
        assert_eq!(h.state.applied_index(), before.applied_index() + 1);
        assert_eq!(
            stored(&h.state, orch_core::Kind::Pod, "default", "p"),
            stored(&before, orch_core::Kind::Pod, "default", "p")
        );
    }

    // Failed is final (and Succeeded: a fresh pod below).
    h.ok(with_pod(&h, &|p| p.status.phase = Some(PodPhase::Failed)));
    for next in [PodPhase::Running, PodPhase::Succeeded] {
        let err = h.err(with_pod(&h, &|p| p.status.phase = Some(next)));
        assert!(err.contains("status.phase: Forbidden: may not change from the terminal phase Failed"), "{err}");
    }
    let mut fresh = Harness::new();
    fresh.ok(Command::Create(crate::fixtures::pod("default", "p")));
    fresh.ok(with_pod(&fresh, &|p| p.status.phase = Some(PodPhase::Succeeded)));
    let err = fresh.err(with_pod(&fresh, &|p| p.status.phase = Some(PodPhase::Running)));
    assert!(err.contains("status.phase: Forbidden: may not change from the terminal phase Succeeded"), "{err}");

    let Object::Node(mut n) = stored(&h.state, orch_core::Kind::Node, "", "n1") else { unreachable!("a node") };
    std::sync::Arc::make_mut(&mut n).status.addresses = vec![
        NodeAddress { type_: "InternalIP".into(), address: "host-a".into() },
        NodeAddress { type_: "Carrier".into(), address: "x".into() },
    ];
    let err = h.err(Command::UpdateStatus(Object::Node(n)));
    assert!(
        err.contains("status.addresses[0].address: Invalid value: \"host-a\": must be a valid IPv4 address"),
        "{err}"
    );
    assert!(err.contains("status.addresses[1].type: Unsupported value: \"Carrier\""), "{err}");
}

/// Node affinity follows Kubernetes' rules: at least one required term, values as the
/// operator wants, integers for Gt and Lt, `metadata.name` the only field, weights 1-100;
/// a pod's affinity cannot change once it exists; a valid one is stored and read back.
#[test]
fn node_affinity_is_checked() {
    let with = |affinity: &str| {
        deployment_with("containers:", &format!("affinity: {{nodeAffinity: {affinity}}}\n      containers:"))
    };
    let required = |terms: &str| {
        with(&format!("{{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: {terms}}}}}"))
    };
    let field = "spec.template.spec.affinity.nodeAffinity";
    let cases = [
        (
            required("[]"),
            format!(
                "{field}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: Required value: must have at least one node selector term"
            ),
        ),
        (
            required("[{matchExpressions: [{key: disk, operator: In}]}]"),
            format!(
                "{field}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
            ),
        ),
        (
            required("[{matchExpressions: [{key: disk, operator: Exists, values: [a]}]}]"),
            format!(
                "{field}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
            ),
        ),
        (
            required("[{matchExpressions: [{key: cores, operator: Gt, values: ['1', '2']}]}]"),
            format!(
                "{field}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: Required value: must be specified single value when `operator` is 'Lt' or 'Gt'"
            ),
        ),
        (
            required("[{matchExpressions: [{key: cores, operator: Lt, values: [many]}]}]"),
            format!(
                "{field}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]: Invalid value: \"many\": must be an integer"
            ),
        ),
        (
            required("[{matchExpressions: [{key: 'bad key!', operator: Exists}]}]"),
            format!(
                "{field}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key: Invalid value: \"bad key!\""
            ),
        ),
        (
            required("[{matchFields: [{key: metadata.labels, operator: In, values: [a]}]}]"),
            format!(
                "{field}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].key: Invalid value: \"metadata.labels\": not a valid field selector key"
            ),
        ),
        (
            required("[{matchFields: [{key: metadata.name, operator: In, values: [a, b]}]}]"),
            format!(
                "{field}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].values: Required value: must be only one value when `operator` is 'In' or 'NotIn' for node field selector"
            ),
        ),
        (
            required("[{matchFields: [{key: metadata.name, operator: Exists}]}]"),
            format!(
                "{field}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].operator: Invalid value: \"Exists\": not a valid selector operator"
            ),
        ),
        (
            required("[{matchExpressions: [{key: disk, values: [a]}]}]"),
            format!(
                "{field}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator: Invalid value: \"\": not a valid selector operator"
            ),
        ),
        (
            required("[{matchExpressions: [{key: disk, operator: In, values: ['not a value!']}]}]"),
            format!(
                "{field}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]: Invalid value: \"not a value!\""
            ),
        ),
        (
            required("[{matchFields: [{key: metadata.name, operator: In, values: [Not_A_Node]}]}]"),
            format!(
                "{field}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].values[0]: Invalid value: \"Not_A_Node\""
            ),
        ),
        (
            with(
                "{preferredDuringSchedulingIgnoredDuringExecution: [{weight: 0, preference: {matchExpressions: [{key: a, operator: Exists}]}}]}",
            ),
            format!(
                "{field}.preferredDuringSchedulingIgnoredDuringExecution[0].weight: Invalid value: 0: must be in the range 1-100"
            ),
        ),
        (
            with(
                "{preferredDuringSchedulingIgnoredDuringExecution: [{weight: 5, preference: {matchExpressions: [{key: a, operator: Gt, values: [x]}]}}]}",
            ),
            format!(
                "{field}.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].values[0]: Invalid value: \"x\": must be an integer"
            ),
        ),
        (
            with(
                "{preferredDuringSchedulingIgnoredDuringExecution: [{weight: 101, preference: {matchExpressions: [{key: a, operator: Exists}]}}]}",
            ),
            format!(
                "{field}.preferredDuringSchedulingIgnoredDuringExecution[0].weight: Invalid value: 101: must be in the range 1-100"
            ),
        ),
    ];
    for (yaml, message) in cases {
        let err = rejected(&yaml);
        assert!(err.contains(&message), "{err}\nwanted: {message}");
    }
    // Pod affinity is not supported: refused by name, not ignored.
    let unknown =
        orch_core::parse_manifests(&deployment_with("containers:", "affinity: {podAffinity: {}}\n      containers:"));
    let unknown = unknown.expect_err("refused").to_string();
    assert!(unknown.contains("spec.template.spec.affinity.podAffinity: unknown field \"podAffinity\""), "{unknown}");

    let mut h = Harness::new();
    let valid = required("[{matchExpressions: [{key: disk, operator: In, values: [ssd]}]}]");
    h.ok(Command::Create(obj(&valid)));
    let stored = h
        .state
        .get(&orch_core::ObjectKey::new(orch_core::Kind::Deployment, "default", "web"))
        .cloned()
        .expect("stored");
    let orch_core::Object::Deployment(d) = stored else { panic!("a deployment") };
    let terms = &d
        .spec
        .template
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .expect("kept")
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .expect("required")
        .node_selector_terms;
    assert_eq!(terms[0].match_expressions[0].values, ["ssd"]);
    // A pod's affinity is immutable.
    h.ok(Command::Create(crate::fixtures::pod("default", "p")));
    let mut pod = h.state.get(&orch_core::ObjectKey::new(orch_core::Kind::Pod, "default", "p")).cloned().expect("p");
    if let orch_core::Object::Pod(p) = &mut pod {
        std::sync::Arc::make_mut(p).spec.affinity = d.spec.template.spec.affinity.clone();
    }
    let err = h.err(Command::Update(pod));
    assert!(err.contains("pod updates may not change fields other than"), "{err}");
}

/// A pod template's annotations share the same total as an object's own.
#[test]
fn template_annotations_are_bounded_in_total() {
    let values: Vec<String> = (0..9).map(|i| format!("a{i}: {}", "v".repeat(30_000))).collect();
    let yaml = deployment_with(
        "metadata: {labels: {app: web}}",
        &format!("metadata: {{labels: {{app: web}}, annotations: {{{}}}}}", values.join(", ")),
    );
    assert_eq!(
        rejected(&yaml),
        "Deployment \"web\" is invalid: spec.template.metadata.annotations: Too long: may not be more than 262144 bytes"
    );
}

/// Rules 7: a node's `spec.podCIDR` is a CIDR, and once set it never changes (Kubernetes'
/// `ValidateNode` and `ValidateNodeUpdate` on `spec.podCIDRs`): the controller manager may
/// give a node one, never move it. An entry stamped with an older rules version is applied as
/// it was.
#[test]
fn a_node_s_pod_cidr_is_a_cidr_and_is_set_once() {
    let node =
        |cidr: &str| obj(&format!("apiVersion: v1\nkind: Node\nmetadata: {{name: n}}\nspec: {{podCIDR: '{cidr}'}}\n"));
    for bad in ["10.244.1.0", "10.244.1.0/33", "10.244.1/24", "10.244.1.0/+8", "fd00::/129", "x/24", "10.244.1.0/ 24"] {
        assert_eq!(
            rejected(&format!("apiVersion: v1\nkind: Node\nmetadata: {{name: n}}\nspec: {{podCIDR: '{bad}'}}\n")),
            format!(
                "Node \"n\" is invalid: spec.podCIDR: Invalid value: \"{bad}\": must be a valid CIDR value, (e.g. \
                 10.9.8.0/24 or 2001:db8::/64)"
            ),
        );
    }
    let mut h = Harness::new();
    h.ok(Command::Create(obj("apiVersion: v1\nkind: Node\nmetadata: {name: n}\n")));
    // From none to one: the allocation.
    h.ok(Command::Update(node("10.244.1.0/24")));
    h.ok(Command::Update(node("10.244.1.0/24")));
    assert_eq!(
        h.err(Command::Update(node("10.244.2.0/24"))),
        "Node \"n\" is invalid: spec.podCIDR: Forbidden: node updates may not change podCIDR except from \"\" to valid"
    );
    assert!(h.err(Command::Update(node(""))).contains("may not change podCIDR"));
    h.ok(Command::Create(obj(
        "apiVersion: v1\nkind: Node\nmetadata: {name: v6}\nspec: {podCIDR: 'fd00:10:244:1::/64'}\n",
    )));
    // Under rules 6 neither rule holds.
    let mut old = Harness::new();
    let entry = |h: &mut Harness, command: Command| {
        h.serial += 1;
        h.now_ms += 1000;
        let request = orch_core::Request {
            client: orch_core::ClientId(1),
            serial: h.serial,
            acked_below: 0,
            retry: false,
            command,
        };
        let index = h.state.applied_index() + 1;
        let entry = orch_core::Entry { rules: 6, ..orch_core::Entry::new(h.now_ms, vec![request]) };
        h.state.apply(index, entry).outcomes.remove(0)
    };
    assert!(entry(&mut old, Command::Create(node("10.244.1.0"))).is_ok());
    assert!(entry(&mut old, Command::Update(node("10.244.2.0/24"))).is_ok());
    // A range stored under rules 6 that is no CIDR stays writable under rules 7 (a taint, a
    // label: what the node lifecycle controller writes), but never changes.
    assert!(entry(&mut old, Command::Update(node("10.244.9.0"))).is_ok());
    let key = orch_core::ObjectKey::new(orch_core::Kind::Node, "", "n");
    let Some(orch_core::Object::Node(stored)) = old.state.get(&key).cloned() else { panic!("the node") };
    let mut tainted = (*stored).clone();
    tainted.spec.unschedulable = Some(true);
    tainted.metadata.resource_version = None;
    old.ok(Command::Update(orch_core::Object::from(tainted)));
    assert!(old.err(Command::Update(node("10.244.9.0/24"))).contains("may not change podCIDR"));
    // Through an apply, too.
    assert!(h.err(Command::Apply(node("10.244.3.0/24"))).contains("may not change podCIDR"));
}
