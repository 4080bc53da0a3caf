//! Apply's three-way merge (rules 6): a manifest applied again keeps what others set.

use std::sync::Arc;

use orch_core::merge::LAST_APPLIED_ANNOTATION;
use orch_core::{Command, Kind, Object, ObjectKey, Outcome};

use crate::fixtures::Harness;

/// The command `orchctl apply` sends for a one-document YAML manifest: its JSON text.
fn apply(yaml: &str) -> Command {
    let value: serde_json::Value = serde_yaml_ng::from_str(yaml).expect("fixture is YAML");
    Command::ApplyManifest(serde_json::to_string(&value).expect("JSON"))
}

fn web(extra_spec: &str, template_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, labels: {{app: web, tier: front}}}}\n\
         spec:\n  {extra_spec}selector: {{matchLabels: {{app: web}}}}\n  template:\n    \
         metadata: {{labels: {{app: web}}}}\n    spec:\n      {template_spec}containers: [{{name: app, image: nginx:1}}]\n"
    )
}

fn deployment(h: &Harness) -> Arc<orch_core::apps_v1::Deployment> {
    match h.state.get(&ObjectKey::new(Kind::Deployment, "default", "web")) {
        Some(Object::Deployment(d)) => d.clone(),
        other => panic!("expected the deployment, got {other:?}"),
    }
}

fn update(h: &mut Harness, f: impl FnOnce(&mut orch_core::apps_v1::Deployment)) {
    let mut d = (*deployment(h)).clone();
    f(&mut d);
    h.ok(Command::Update(Object::from(d)));
}

#[test]
fn a_manifest_applied_again_keeps_what_others_set() {
    let mut h = Harness::new();
    h.ok(apply(&web("", "")));
    h.ok(Command::Scale { key: ObjectKey::new(Kind::Deployment, "default", "web"), replicas: 5 });
    update(&mut h, |d| {
        d.metadata.annotations.insert(orch_core::apps_v1::REVISION_ANNOTATION, "3");
        d.metadata.labels.insert("owner", "ops");
        d.metadata.finalizers.push("example.com/keep".into());
        d.spec
            .template
            .spec
            .containers
            .push(serde_json::from_str(r#"{"name":"sidecar","image":"envoy:1"}"#).expect("container"));
    });
    let s = h.ok(apply(&web("", "")));
    assert_eq!(s.changes[0].action, orch_core::Action::Unchanged, "nothing of the manifest changed");
    let d = deployment(&h);
    assert_eq!(d.spec.replicas, Some(5), "the scale stays");
    assert_eq!(d.metadata.annotations.get(orch_core::apps_v1::REVISION_ANNOTATION), Some("3"));
    assert_eq!(d.metadata.labels.get("owner"), Some("ops"));
    assert_eq!(d.metadata.finalizers, ["example.com/keep"]);
    let names: Vec<&str> = d.spec.template.spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["app", "sidecar"]);

    // A change of the manifest changes what it names, and only that.
    h.ok(apply(&web("", "").replace("nginx:1", "nginx:2")));
    let d = deployment(&h);
    let images: Vec<&str> = d.spec.template.spec.containers.iter().map(|c| c.image.as_str()).collect();
    assert_eq!(images, ["nginx:2", "envoy:1"]);
    assert_eq!(d.spec.replicas, Some(5));
}

#[test]
fn what_the_last_manifest_set_and_this_one_does_not_is_removed() {
    let mut h = Harness::new();
    h.ok(apply(&web("replicas: 3\n  minReadySeconds: 5\n  ", "")));
    h.ok(Command::Scale { key: ObjectKey::new(Kind::Deployment, "default", "web"), replicas: 7 });
    // The label `tier`, replicas and minReadySeconds leave the manifest.
    h.ok(apply(&web("", "").replace(", tier: front", "")));
    let d = deployment(&h);
    assert_eq!(d.metadata.labels.get("tier"), None);
    assert_eq!(d.spec.min_ready_seconds, None);
    // As kubectl: replicas named before and no longer are removed (and default to 1),
    // however they were scaled since.
    assert_eq!(d.spec.replicas, Some(1));
}

#[test]
fn an_empty_list_in_the_manifest_clears_what_an_absent_one_keeps() {
    let mut h = Harness::new();
    h.ok(apply(&web("", "")));
    update(&mut h, |d| {
        d.spec.template.spec.node_selector.insert("disk", "ssd");
        d.spec.template.spec.tolerations =
            vec![serde_json::from_str(r#"{"key":"k","operator":"Exists"}"#).expect("toleration")];
    });
    h.ok(apply(&web("", "")));
    assert_eq!(deployment(&h).spec.template.spec.tolerations.len(), 1, "absent: kept");
    h.ok(apply(&web("", "tolerations: []\n      ")));
    let d = deployment(&h);
    assert!(d.spec.template.spec.tolerations.is_empty(), "empty: cleared");
    assert_eq!(d.spec.template.spec.node_selector.get("disk"), Some("ssd"));
}

#[test]
fn the_manifest_is_recorded_without_itself_and_with_its_namespace() {
    let mut h = Harness::new();
    let manifest = web("", "");
    h.ok(apply(&manifest));
    // The object as read back (with its annotation and what the system set), applied as a
    // manifest, as after `orchctl get -o json > file`: the annotation records the manifest
    // without the annotation it carried.
    h.ok(apply(&web("", "")));
    let read_back = serde_json::to_string(&Object::Deployment(deployment(&h)).to_manifest()).expect("JSON");
    h.ok(Command::ApplyManifest(read_back));
    let recorded: serde_json::Value =
        serde_json::from_str(deployment(&h).metadata.annotations.get(LAST_APPLIED_ANNOTATION).expect("recorded"))
            .expect("JSON");
    assert!(recorded["metadata"]["annotations"].get(LAST_APPLIED_ANNOTATION).is_none(), "{recorded}");
    assert_eq!(recorded["metadata"]["uid"], deployment(&h).metadata.uid.map(|u| u.to_string()).unwrap_or_default());
    h.ok(apply(&manifest));
    let d = deployment(&h);
    let recorded: serde_json::Value =
        serde_json::from_str(d.metadata.annotations.get(LAST_APPLIED_ANNOTATION).expect("recorded")).expect("JSON");
    let mut expected: serde_json::Value = serde_yaml_ng::from_str(&manifest).expect("YAML");
    expected["metadata"]["namespace"] = "default".into();
    assert_eq!(recorded, expected);
}

#[test]
fn an_object_created_without_apply_is_merged_into_and_loses_nothing() {
    let mut h = Harness::new();
    let created = crate::fixtures::obj(&web("replicas: 4\n  ", ""));
    h.ok(Command::Create(created));
    h.ok(apply(&web("", "").replace(", tier: front", "")));
    let d = deployment(&h);
    assert_eq!(d.spec.replicas, Some(4), "no last applied manifest: nothing removed");
    assert_eq!(d.metadata.labels.get("tier"), Some("front"));
    assert!(d.metadata.annotations.get(LAST_APPLIED_ANNOTATION).is_some());
}

#[test]
fn a_bad_manifest_is_refused_naming_the_rule_and_writes_nothing() {
    let mut h = Harness::new();
    h.ok(apply(&web("", "")));
    let cases = [
        ("not json", "manifest: Invalid value: not JSON"),
        ("[1]", "manifest: Invalid value: must be a JSON object"),
        (r#"{"apiVersion":"v1","kind":"Nope"}"#, "manifest: apiVersion and kind: Invalid value"),
        (
            r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":"three"}}"#,
            "manifest: spec.replicas: Invalid value: does not fit the Deployment model",
        ),
        (
            r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replcas":3}}"#,
            "manifest: spec.replcas: Invalid value: does not fit the Deployment model",
        ),
    ];
    for (text, message) in cases {
        let error = h.err(Command::ApplyManifest(text.into()));
        assert!(error.contains(message), "{text}: {error}");
    }
    let long = " ".repeat(orch_core::merge::APPLY_MANIFEST_BYTES_MAX + 1);
    assert!(h.err(Command::ApplyManifest(long)).contains("Too long"));
    // A merge the validation refuses: the selector no longer matches the template.
    let error = h.err(apply(&web("", "").replace("matchLabels: {app: web}", "matchLabels: {app: other}")));
    assert!(error.contains("selector"), "{error}");
}

#[test]
fn typed_apply_merges_as_its_manifest() {
    let mut h = Harness::new();
    let typed = |extra: &str| Command::Apply(crate::fixtures::obj(&web(extra, "")));
    h.ok(typed("replicas: 2\n  "));
    h.ok(Command::Scale { key: ObjectKey::new(Kind::Deployment, "default", "web"), replicas: 6 });
    update(&mut h, |d| {
        d.metadata.annotations.insert(orch_core::apps_v1::REVISION_ANNOTATION, "1");
    });
    h.ok(typed(""));
    let d = deployment(&h);
    assert_eq!(d.spec.replicas, Some(1), "named before, not now: removed");
    assert_eq!(d.metadata.annotations.get(orch_core::apps_v1::REVISION_ANNOTATION), Some("1"));
}

#[test]
fn apply_is_one_outcome_per_retry() {
    // The same request retried is answered from the session table, not applied twice.
    let mut h = Harness::new();
    let request = orch_core::Request {
        client: orch_core::ClientId(7),
        serial: 1,
        acked_below: 0,
        retry: false,
        command: apply(&web("replicas: 2\n  ", "")),
    };
    let first: Vec<Outcome> = h.run_requests(vec![request.clone()]);
    h.ok(Command::Scale { key: ObjectKey::new(Kind::Deployment, "default", "web"), replicas: 9 });
    let again = h.run_requests(vec![orch_core::Request { retry: true, ..request }]);
    assert_eq!(first, again);
    assert_eq!(deployment(&h).spec.replicas, Some(9), "applied again, the manifest's 2 would be back");
}

#[test]
fn a_strategy_changed_to_recreate_drops_the_defaulted_rolling_update() {
    // The live object was defaulted with `rollingUpdate` (25%/25%), which `Recreate` forbids:
    // as Kubernetes' retainKeys, the fields the manifest's strategy leaves out go with it.
    let mut h = Harness::new();
    h.ok(apply(&web("", "")));
    assert!(deployment(&h).spec.strategy.rolling_update.is_some(), "defaulted");
    h.ok(apply(&web("strategy: {type: Recreate}\n  ", "")));
    let d = deployment(&h);
    assert_eq!(d.spec.strategy.type_, Some(orch_core::apps_v1::DeploymentStrategyType::Recreate));
    assert!(d.spec.strategy.rolling_update.is_none());
}
