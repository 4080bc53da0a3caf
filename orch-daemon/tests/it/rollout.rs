//! A rollout through the real daemon on simulated nodes, watched at every committed state.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use orch_api::{Client, WatchItem, WatchStream};
use orch_core::core_v1::Pod;
use orch_core::meta::ConditionStatus;
use orch_core::{EventType, Kind, Object, ObjectKey};

use crate::harness::{Daemon, http, http_get};

const NET: u8 = 31;
const REPLICAS: usize = 10;
const MAX_SURGE: usize = 3;
const MAX_UNAVAILABLE: usize = 2;

fn deployment(image: &str) -> Vec<Object> {
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: roll}}\n---\napiVersion: apps/v1\nkind: Deployment\n\
         metadata: {{name: web, namespace: roll}}\nspec:\n  replicas: {REPLICAS}\n  selector: {{matchLabels: {{app: web}}}}\n  \
         strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: {MAX_SURGE}, maxUnavailable: {MAX_UNAVAILABLE}}}}}\n  \
         template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: web\n        \
         image: {image}\n        command: [python3, -m, http.server, '8080']\n        \
         resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}\n"
    );
    orch_core::parse_manifests(&yaml).expect("valid")
}

fn ready(p: &Pod) -> bool {
    p.status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
}

/// The namespace's pods as the watch reports them, checked at every revision.
struct Watched {
    pods: BTreeMap<String, Pod>,
    stream: WatchStream,
    revisions: usize,
    /// The most pods active at one revision.
    peak: usize,
}

impl Watched {
    async fn start(client: &Client) -> Self {
        let (pods, revision) = client.list(Kind::Pod, Some("roll"), "", None).await.expect("list");
        let pods =
            pods.into_iter().filter_map(|o| o.as_pod().map(|p| (p.metadata.name.to_string(), p.clone()))).collect();
        Self { pods, stream: client.watch(revision, "Pod", "roll", "", ""), revisions: 0, peak: 0 }
    }

    /// Follows the watch until every active pod runs `image`, Ready, `REPLICAS` of them;
    /// with `bounds`, after each revision at most replicas + maxSurge pods are active and at
    /// least replicas - maxUnavailable of those Ready (a rollout's bounds: not while the
    /// first pods come up).
    async fn until_all_on(&mut self, image: &str, bounds: bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let active: Vec<&Pod> = self.pods.values().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
            let ready_count = active.iter().filter(|p| ready(p)).count();
            self.peak = self.peak.max(active.len());
            assert!(active.len() <= REPLICAS + MAX_SURGE, "{} pods active at one revision", active.len());
            if bounds {
                assert!(ready_count + MAX_UNAVAILABLE >= REPLICAS, "{ready_count} pods Ready at one revision");
            }
            if active.len() == REPLICAS
                && ready_count == REPLICAS
                && active.iter().all(|p| p.spec.containers[0].image.as_str() == image)
            {
                return;
            }
            let item = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("not every pod on {image} within 60 s: {:?}", self.images()))
                .expect("the watch goes on")
                .expect("no watch error");
            if let WatchItem::Events { events, .. } = item {
                self.revisions += 1;
                for e in events {
                    let Some(pod) = e.object.as_pod() else { continue };
                    let name = pod.metadata.name.to_string();
                    if e.event_type == EventType::Deleted {
                        self.pods.remove(&name);
                    } else {
                        self.pods.insert(name, pod.clone());
                    }
                }
            }
        }
    }

    fn images(&self) -> BTreeMap<String, usize> {
        let mut images = BTreeMap::new();
        for p in self.pods.values().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            *images.entry(p.spec.containers[0].image.to_string()).or_insert(0) += 1;
        }
        images
    }
}

async fn until<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn revision(client: &Client) -> Option<String> {
    let (d, _) = client.get(&ObjectKey::new(Kind::Deployment, "roll", "web")).await.ok()?;
    d.meta().annotations.get("deployment.kubernetes.io/revision").map(str::to_owned)
}

/// Issue 13's daemon test: a 10-replica deployment is placed on simulated nodes; its image
/// changes and at every committed state the watch shows the surge and availability bounds
/// hold; `rollout undo` brings the first image back under them; deleting the deployment
/// leaves no ReplicaSet and no pod behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_replica_rollout_keeps_its_bounds_rolls_back_and_leaves_nothing_behind() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut daemon = Daemon::new(root.path(), NET, 1, &["--simulated-nodes".to_owned(), "3".to_owned()]);
    daemon.start();
    let probe = http(NET, 1);
    tokio::task::spawn_blocking(move || {
        crate::harness::eventually("ready", || http_get(&probe, "/readyz").filter(|r| r.0 == 200))
    })
    .await
    .expect("ready");
    let client = Client::new([daemon.api()]).expect("client");
    until("three simulated nodes", || async {
        let (nodes, _) = client.list(Kind::Node, None, "", None).await.ok()?;
        (nodes.len() == 3).then_some(())
    })
    .await;

    client.apply(&deployment("python:3.12-slim")).await.expect("applied");
    let mut watched = Watched::start(&client).await;
    watched.until_all_on("python:3.12-slim", false).await;
    assert_eq!(revision(&client).await.as_deref(), Some("1"));

    // A new image: at no committed state more than 13 pods, nor fewer than 8 Ready.
    let before = watched.revisions;
    watched.peak = 0;
    client.apply(&deployment("python:3.13-slim")).await.expect("applied");
    watched.until_all_on("python:3.13-slim", true).await;
    assert!(watched.revisions - before >= 10, "a rollout of 10 pods seen in {} revisions", watched.revisions - before);
    // The surge was used (so the bound above was put to the test).
    assert!(watched.peak > REPLICAS, "at most {} pods active during the rollout", watched.peak);
    assert_eq!(revision(&client).await.as_deref(), Some("2"));

    // Back to the first template, under the same bounds, as revision 3.
    client.rollout_undo("roll", "web", 0).await.expect("undone");
    watched.until_all_on("python:3.12-slim", true).await;
    assert_eq!(revision(&client).await.as_deref(), Some("3"));
    let (sets, _) = client.list(Kind::ReplicaSet, Some("roll"), "", None).await.expect("list");
    assert_eq!(sets.len(), 2, "the first set came back; no third");

    // Deleted, the deployment leaves nothing: the garbage collector takes its sets, they
    // their pods, which the simulated nodes stop.
    client.delete(&ObjectKey::new(Kind::Deployment, "roll", "web"), None).await.expect("deleted");
    until("nothing left of the deployment", || async {
        let (sets, _) = client.list(Kind::ReplicaSet, Some("roll"), "", None).await.ok()?;
        let (pods, _) = client.list(Kind::Pod, Some("roll"), "", None).await.ok()?;
        let gone = client.get(&ObjectKey::new(Kind::Deployment, "roll", "web")).await.is_err();
        (gone && sets.is_empty() && pods.is_empty()).then_some(())
    })
    .await;
}
