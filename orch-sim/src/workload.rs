//! The workload: clients that create, compare-and-set, update the status of, delete, get and
//! list a few objects through orch's real API (`orch_api::Client` against each node's
//! `ApiService`, over the in-memory connections of [`crate::api`]), whose own logic retries
//! with the same serial when an outcome is unknown; stale reads from a node's `ControlPlane`
//! (the embedded API); watchers cut and resumed at random points on random nodes; and the
//! liveness probe. Every operation goes into the history with the moment it was called and
//! the moment it returned.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use orch_api::{ClientOptions, Error, WatchItem};
use orch_core::{ClientId, Kind, Object, Text};
use orch_raft::control_plane::Consistency;

use crate::api::api_address;
use crate::cluster::{NAMESPACE, World, lock, object_key, value_of};
use crate::history::{Op, OpKind, OpResult, Value, WatchLog};
use crate::rng::Rng;

/// How long one attempt of a call may take before the client gives up on it.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a call is retried before it fails (a write's outcome is then unknown).
pub(crate) const WRITE_DEADLINE: Duration = Duration::from_secs(6);

fn pod(key: u32, spec: u64) -> Object {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: k{key}, namespace: {NAMESPACE}, labels: {{v: '{spec}'}}}}\nspec: {{containers: [{{name: c, image: x}}]}}"
    );
    orch_core::parse_manifests(&manifest).expect("the simulated pod is valid").remove(0)
}

/// A real API client of the simulated cluster: the nodes' addresses starting at a random one,
/// the given id, the in-memory connector, and timeouts on the simulation's scale.
pub(crate) fn api_client(world: &World, rng: &mut Rng, id: ClientId, retry_for: Duration) -> orch_api::Client {
    let mut members = lock(&world.members).clone();
    let first = rng.pick(members.len());
    members.rotate_left(first);
    let addrs = members.into_iter().map(api_address);
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: ATTEMPT_TIMEOUT,
        retry_for,
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(1),
        // Nodes restart: a client outlives them.
        wait_while_refused: true,
    };
    orch_api::Client::builder(addrs)
        .options(options)
        .id(id)
        .connector(world.api.connector())
        .build()
        .expect("the simulated addresses are valid")
}

/// A client id of the simulation: `kind` tells clients, watchers and probes apart.
fn client_id(kind: u16, index: u64, rng: &mut Rng) -> ClientId {
    ClientId((u128::from(kind) << 112) | (u128::from(index) << 64) | u128::from(rng.next_u64() | 1))
}

/// One simulated client.
pub(crate) struct Client {
    world: Arc<World>,
    index: u64,
    api: orch_api::Client,
    rng: Rng,
    writes: u64,
    keys: u32,
    think_ms: u64,
}

impl Client {
    pub(crate) fn new(world: Arc<World>, index: u64, rng: Rng, keys: u32, think_ms: u64) -> Self {
        let mut rng = rng;
        let id = client_id(0x5157, index, &mut rng);
        let api = api_client(&world, &mut rng, id, WRITE_DEADLINE);
        Self { world, index, api, rng, writes: 0, keys, think_ms }
    }

    /// Issues operations until the world stops.
    pub(crate) async fn run(mut self) {
        while !self.world.stop.load(Ordering::Relaxed) {
            let think = self.rng.between(1, self.think_ms);
            tokio::time::sleep(Duration::from_millis(think)).await;
            let key = u32::try_from(self.rng.below(u64::from(self.keys))).unwrap_or(0);
            match self.rng.below(100) {
                0..6 => self.stale_read().await,
                6..14 => {
                    self.get(key).await;
                }
                14..20 => self.list().await,
                20..40 => self.create(key).await,
                40..70 => self.compare_and_set(key, false).await,
                70..85 => self.compare_and_set(key, true).await,
                _ => self.delete(key).await,
            }
        }
    }

    fn next_write_id(&mut self) -> u64 {
        self.writes += 1;
        ((self.index + 1) << 32) | self.writes
    }

    fn record(&self, op: Op) {
        let text = format!("op {} {} {:?} {:?}", op.client, op.key, op.kind, op.result);
        self.world.trace(text.as_bytes());
        lock(&self.world.history).ops.push(op);
    }

    /// A stale read from any node, through the embedded API: the revision it served is
    /// recorded (a node never serves an older one than it served before, crashes included).
    async fn stale_read(&mut self) {
        let live = self.world.live();
        if live.is_empty() {
            return;
        }
        let (node, _, cp) = &live[self.rng.pick(live.len())];
        if let Ok(state) = cp.state(Consistency::Stale).await {
            self.world.trace(format!("stale {node} {}", state.applied_index()).as_bytes());
            lock(&self.world.history).stale_reads.push((*node, state.applied_index()));
        }
    }

    /// A linearizable read of `key`, recorded; None if no node answered in time.
    pub(crate) async fn get(&mut self, key: u32) -> Option<Option<(Value, Object)>> {
        let call = self.world.tick();
        let found = match self.api.get(&object_key(key)).await {
            Ok((object, _)) => value_of(&object).map(|(_, v)| (v, object)),
            Err(Error::NotFound(_)) => None,
            // A read that failed changed nothing: it is not part of the history.
            Err(_) => return None,
        };
        let ret = self.world.tick();
        let result = OpResult::Read(found.as_ref().map(|(v, _)| *v));
        self.record(Op { client: self.index, key, kind: OpKind::Get, call, ret: Some(ret), result });
        Some(found)
    }

    /// A linearizable list of the simulated objects: a read of every key at one point.
    async fn list(&mut self) {
        let call = self.world.tick();
        let Ok((objects, _)) = self.api.list(Kind::Pod, Some(NAMESPACE), "", None).await else { return };
        let ret = self.world.tick();
        let values: Vec<(u32, Value)> = objects.iter().filter_map(value_of).collect();
        for key in 0..self.keys {
            let value = values.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
            self.record(Op {
                client: self.index,
                key,
                kind: OpKind::Get,
                call,
                ret: Some(ret),
                result: OpResult::Read(value),
            });
        }
    }

    async fn create(&mut self, key: u32) {
        let spec = self.next_write_id();
        let call = self.world.tick();
        let result = self.api.create(&pod(key, spec)).await;
        self.finish(key, OpKind::Create(Value { spec, status: 0 }), call, result);
    }

    async fn delete(&mut self, key: u32) {
        let call = self.world.tick();
        let result = self.api.delete(&object_key(key), Some(0)).await;
        self.finish(key, OpKind::Delete, call, result);
    }

    /// Reads the object, then writes its spec (or its status) on the revision read.
    async fn compare_and_set(&mut self, key: u32, status: bool) {
        match self.get(key).await {
            Some(Some((expect, read))) => {
                let id = self.next_write_id();
                let mut object = pod(key, if status { expect.spec } else { id });
                object.meta_mut().resource_version = read.meta().resource_version;
                let call = self.world.tick();
                if status {
                    if let Object::Pod(p) = &mut object {
                        Arc::make_mut(p).status.message = Some(Text::from(id.to_string()));
                    }
                    let result = self.api.update_status(&object).await;
                    self.finish(key, OpKind::Status { status: id, expect }, call, result);
                } else {
                    let result = self.api.update(&object).await;
                    self.finish(key, OpKind::Update { spec: id, expect }, call, result);
                }
            }
            Some(None) => self.create(key).await,
            None => {}
        }
    }

    /// Records a write's outcome: definite answers as they are, every failure (the client
    /// library gave up retrying, or the session that knew the outcome is gone) as unknown.
    fn finish(&mut self, key: u32, kind: OpKind, call: u64, result: Result<orch_api::client::WriteResult, Error>) {
        let result = match result {
            Ok(_) => OpResult::Ok,
            Err(Error::AlreadyExists(_)) => OpResult::AlreadyExists,
            Err(Error::NotFound(_)) => OpResult::NotFound,
            Err(Error::Conflict(_)) => OpResult::Conflict,
            Err(e @ (Error::Invalid(_) | Error::Forbidden(_))) => {
                panic!("the simulated workload sent a request the API refuses: {e}")
            }
            Err(_) => OpResult::Unknown,
        };
        let ret = (result != OpResult::Unknown).then(|| self.world.tick());
        self.record(Op { client: self.index, key, kind, call, ret, result });
    }
}

/// One simulated watcher: watches the simulated objects through the API from a random node,
/// cuts the stream after a random number of items, resumes from the last revision it
/// processed with a new client (on another random node), and lists again when told its
/// revision expired. Within one stream the client library resumes by itself on another node
/// when a connection breaks; the checker sees the items it delivered.
pub(crate) async fn watcher(world: Arc<World>, index: u64, mut rng: Rng) {
    let log = |item: WatchLog| {
        world.trace(format!("watch {index} {item:?}").as_bytes());
        lock(&world.history).watches.entry(index).or_default().push(item);
    };
    let mut cursor: Option<u64> = None;
    let mut resumes = 0;
    while !world.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.between(1, 100))).await;
        resumes += 1;
        let id = client_id(0x5761, (index << 24) | resumes, &mut rng);
        let api = api_client(&world, &mut rng, id, WRITE_DEADLINE);
        let Some(from) = cursor else {
            if let Ok((_, revision)) = api.list(Kind::Pod, Some(NAMESPACE), "", None).await {
                cursor = Some(revision);
                log(WatchLog::Relisted(revision));
            }
            continue;
        };
        let mut stream = api.watch(from.max(1), Kind::Pod.as_str(), NAMESPACE, "", "");
        log(WatchLog::Resume(from));
        let cut_after = rng.between(1, 40);
        let mut items = 0;
        while items < cut_after && !world.stop.load(Ordering::Relaxed) {
            let next = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
            match next {
                Ok(Some(Ok(WatchItem::Events { revision, events }))) => {
                    let changes = events
                        .iter()
                        .filter_map(|e| {
                            let (key, value) = value_of(&e.object)?;
                            Some(crate::history::Change { event: e.event_type, key, value })
                        })
                        .collect();
                    log(WatchLog::Events(revision, changes));
                    cursor = Some(revision);
                }
                Ok(Some(Ok(WatchItem::Progress(revision)))) => {
                    log(WatchLog::Progress(revision));
                    cursor = cursor.map(|c| c.max(revision));
                }
                Ok(Some(Err(Error::Expired(why)))) => {
                    // A server that found a gap in its feed says so as an expiry (loud, and
                    // the client relists); the checker counts it as the bug it is.
                    if why.contains("watch feed gap") {
                        log(WatchLog::Gap(why));
                    }
                    log(WatchLog::Expired);
                    cursor = None;
                    break;
                }
                // The client library found the stream broken (a revision out of order, or left
                // incomplete): a server's bug, which the checker reports.
                Ok(Some(Err(Error::Internal(why)))) if why.contains("malformed response") => {
                    log(WatchLog::Gap(why));
                    log(WatchLog::Expired);
                    cursor = None;
                    break;
                }
                // The client gave up resuming (no node served it for its retry time).
                Ok(Some(Err(_)) | None) => break,
                // Quiet for a while (progress comes every 100 ms): the client is resuming.
                Err(_) => {}
            }
            items += 1;
        }
    }
}

/// The liveness probe: a write through the API, retried by the client until it is
/// acknowledged or `give_up` passes; when it completed.
pub(crate) async fn probe(world: Arc<World>, give_up: Duration) -> Option<u64> {
    let mut rng = Rng::new(0x7072_6f62);
    let id = client_id(0x7072, 0, &mut rng);
    let api = api_client(&world, &mut rng, id, give_up);
    let manifest = "apiVersion: v1\nkind: Namespace\nmetadata: {name: probe}";
    let namespace = orch_core::parse_manifests(manifest).expect("valid").remove(0);
    match api.apply(&[namespace]).await {
        // Any answer from the log is the write completing (an "outcome unknown" too: the
        // session that knew it expired, through the log).
        Ok(_) | Err(Error::OutcomeUnknown(_)) => Some(world.now_ms()),
        Err(_) => None,
    }
}
