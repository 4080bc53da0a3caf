//! The workload: clients that create, compare-and-set, update the status of, delete and read
//! a few objects through the nodes' `ControlPlane` (the embedded API), retrying with the same
//! serial when an outcome is unknown; watchers cut and resumed at random points; and the
//! liveness probe. Every operation goes into the history with the moment it was called and the
//! moment it returned.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use orch_core::{ApplyError, ClientId, Command, Object, Preconditions, Request, Revision, Text, WatchFilter};
use orch_raft::control_plane::{Consistency, ControlPlane, Error, WatchItem};

use crate::cluster::{World, lock, object_key, value_of};
use crate::history::{Op, OpKind, OpResult, Value, WatchLog};
use crate::rng::Rng;

/// How long one attempt of a call may take before the client gives up on it.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a write is retried before its outcome is recorded as unknown.
pub(crate) const WRITE_DEADLINE: Duration = Duration::from_secs(6);

fn pod(key: u32, spec: u64) -> Object {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: k{key}, namespace: default, labels: {{v: '{spec}'}}}}\nspec: {{containers: [{{name: c, image: x}}]}}"
    );
    orch_core::parse_manifests(&manifest).expect("the simulated pod is valid").remove(0)
}

/// One simulated client.
pub(crate) struct Client {
    world: Arc<World>,
    index: u64,
    id: ClientId,
    rng: Rng,
    serial: u64,
    writes: u64,
    leader: Option<u64>,
    keys: u32,
    think_ms: u64,
}

/// What became of a call on the nodes.
enum Answer<T> {
    Done(T),
    /// Failed in a way that says nothing was proposed: try another node.
    NotProposed,
    /// Failed in a way that may have proposed it.
    Maybe,
}

impl Client {
    pub(crate) fn new(world: Arc<World>, index: u64, rng: Rng, keys: u32, think_ms: u64) -> Self {
        let mut rng = rng;
        let id = ClientId((u128::from(0x5157_u16) << 112) | (u128::from(index) << 64) | u128::from(rng.next_u64()));
        Self { world, index, id, rng, serial: 0, writes: 0, leader: None, keys, think_ms }
    }

    /// Issues operations until the world stops.
    pub(crate) async fn run(mut self) {
        while !self.world.stop.load(Ordering::Relaxed) {
            let think = self.rng.between(1, self.think_ms);
            tokio::time::sleep(Duration::from_millis(think)).await;
            let key = u32::try_from(self.rng.below(u64::from(self.keys))).unwrap_or(0);
            match self.rng.below(100) {
                0..8 => self.stale_read().await,
                8..20 => {
                    self.get(key).await;
                }
                20..40 => self.create(key).await,
                40..70 => self.compare_and_set(key, false).await,
                70..85 => self.compare_and_set(key, true).await,
                _ => self.write(key, OpKind::Delete, delete(key)).await,
            }
        }
    }

    fn next_write_id(&mut self) -> u64 {
        self.writes += 1;
        ((self.index + 1) << 32) | self.writes
    }

    /// A node to call: the leader it was told of, if up, else any node up.
    fn pick(&mut self) -> Option<(u64, ControlPlane)> {
        let live = self.world.live();
        if let Some(l) = self.leader
            && let Some((id, _, cp)) = live.iter().find(|(id, _, _)| *id == l)
        {
            return Some((*id, cp.clone()));
        }
        if live.is_empty() {
            return None;
        }
        let (id, _, cp) = &live[self.rng.pick(live.len())];
        Some((*id, cp.clone()))
    }

    fn record(&self, op: Op) {
        let text = format!("op {} {} {:?} {:?}", op.client, op.key, op.kind, op.result);
        self.world.trace(text.as_bytes());
        lock(&self.world.history).ops.push(op);
    }

    /// A stale read from any node: the revision it served is recorded (a node never serves an
    /// older one than it served before, crashes included).
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
    pub(crate) async fn get(&mut self, key: u32) -> Option<Option<(Value, Revision)>> {
        let call = self.world.tick();
        let deadline = tokio::time::Instant::now() + WRITE_DEADLINE;
        while tokio::time::Instant::now() < deadline {
            let Some((_, cp)) = self.pick() else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let read = cp.read(Consistency::Linearizable, |s| {
                s.get(&object_key(key)).and_then(|o| value_of(o).map(|(_, v)| (v, o.meta().revision())))
            });
            let answer = match tokio::time::timeout(ATTEMPT_TIMEOUT, read).await {
                Ok(Ok(found)) => Answer::Done(found),
                Ok(Err(Error::NotLeader { leader, .. })) => {
                    self.leader = leader;
                    Answer::NotProposed
                }
                _ => {
                    self.leader = None;
                    Answer::Maybe
                }
            };
            match answer {
                Answer::Done(found) => {
                    let ret = self.world.tick();
                    let result = OpResult::Read(found.map(|(v, _)| v));
                    self.record(Op { client: self.index, key, kind: OpKind::Get, call, ret: Some(ret), result });
                    return Some(found);
                }
                Answer::NotProposed | Answer::Maybe => {
                    tokio::time::sleep(Duration::from_millis(self.rng.between(10, 50))).await;
                }
            }
        }
        // A read that failed changed nothing: it is not part of the history.
        None
    }

    async fn create(&mut self, key: u32) {
        let spec = self.next_write_id();
        self.write(key, OpKind::Create(Value { spec, status: 0 }), Command::Create(pod(key, spec))).await;
    }

    /// Reads the object, then writes its spec (or its status) on the revision read.
    async fn compare_and_set(&mut self, key: u32, status: bool) {
        match self.get(key).await {
            Some(Some((expect, revision))) => {
                let id = self.next_write_id();
                let mut object = pod(key, if status { expect.spec } else { id });
                object.meta_mut().resource_version = Some(revision);
                if status {
                    if let Object::Pod(p) = &mut object {
                        Arc::make_mut(p).status.message = Some(Text::from(id.to_string()));
                    }
                    self.write(key, OpKind::Status { status: id, expect }, Command::UpdateStatus(object)).await;
                } else {
                    self.write(key, OpKind::Update { spec: id, expect }, Command::Update(object)).await;
                }
            }
            Some(None) => self.create(key).await,
            None => {}
        }
    }

    /// Proposes `command` with the next serial until an outcome comes back, retrying (with the
    /// same serial, marked a retry once an attempt may have reached the log) until
    /// [`WRITE_DEADLINE`]; records the operation.
    async fn write(&mut self, key: u32, kind: OpKind, command: Command) {
        self.serial += 1;
        let serial = self.serial;
        let call = self.world.tick();
        let deadline = tokio::time::Instant::now() + WRITE_DEADLINE;
        let mut maybe_proposed = false;
        let result = loop {
            if tokio::time::Instant::now() >= deadline {
                break OpResult::Unknown;
            }
            let Some((_, cp)) = self.pick() else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let request = Request {
                client: self.id,
                serial,
                acked_below: serial,
                retry: maybe_proposed,
                command: command.clone(),
            };
            let answer = match tokio::time::timeout(ATTEMPT_TIMEOUT, cp.submit(vec![request])).await {
                Ok(Ok(mut outcomes)) => Answer::Done(outcomes.pop()),
                Ok(Err(Error::NotLeader { leader, .. })) => {
                    self.leader = leader;
                    Answer::NotProposed
                }
                Ok(Err(Error::Invalid(why))) => panic!("the simulated workload sent an invalid request: {why}"),
                _ => {
                    self.leader = None;
                    Answer::Maybe
                }
            };
            match answer {
                Answer::Done(Some(outcome)) => break result_of(&outcome),
                Answer::Done(None) => break OpResult::Unknown,
                Answer::NotProposed => {}
                Answer::Maybe => maybe_proposed = true,
            }
            tokio::time::sleep(Duration::from_millis(self.rng.between(10, 50))).await;
        };
        let ret = (result != OpResult::Unknown).then(|| self.world.tick());
        self.record(Op { client: self.index, key, kind, call, ret, result });
    }
}

fn delete(key: u32) -> Command {
    Command::Delete { key: object_key(key), grace_period_seconds: Some(0), preconditions: Preconditions::default() }
}

fn result_of(outcome: &orch_core::Outcome) -> OpResult {
    match outcome {
        Ok(_) => OpResult::Ok,
        Err(ApplyError::AlreadyExists { .. }) => OpResult::AlreadyExists,
        Err(ApplyError::NotFound { .. }) => OpResult::NotFound,
        Err(ApplyError::Conflict { .. }) => OpResult::Conflict,
        // The session's record is gone: whether an earlier attempt applied is unknown.
        Err(ApplyError::SessionExpired { .. } | ApplyError::StaleRequest { .. }) => OpResult::Unknown,
        Err(other) => panic!("the simulated workload got an answer it never expects: {other}"),
    }
}

/// One simulated watcher: watches the simulated objects from a random node, cuts the stream
/// after a random number of items, resumes from the last revision it processed on another
/// node, and relists when told its revision expired.
pub(crate) async fn watcher(world: Arc<World>, index: u64, mut rng: Rng) {
    let log = |item: WatchLog| {
        world.trace(format!("watch {index} {item:?}").as_bytes());
        lock(&world.history).watches.entry(index).or_default().push(item);
    };
    let filter =
        WatchFilter { kind: Some(orch_core::Kind::Pod), namespace: Some("default".into()), ..WatchFilter::default() };
    let mut cursor: Option<u64> = None;
    while !world.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.between(1, 100))).await;
        let live = world.live();
        if live.is_empty() {
            continue;
        }
        let (node, incarnation, cp) = live[rng.pick(live.len())].clone();
        let Some(from) = cursor else {
            if let Ok(state) = cp.state(Consistency::Stale).await {
                cursor = Some(state.applied_index());
                log(WatchLog::Relisted(state.applied_index()));
            }
            continue;
        };
        let mut stream = match cp.watch(from.max(1), filter.clone()) {
            Ok(stream) => stream,
            Err(Error::Expired(_)) => {
                log(WatchLog::Expired);
                cursor = None;
                continue;
            }
            Err(_) => continue,
        };
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
                Ok(Some(Ok(WatchItem::Progress { revision }))) => {
                    log(WatchLog::Progress(revision));
                    cursor = cursor.map(|c| c.max(revision));
                }
                Ok(Some(Err(Error::Expired(_)))) => {
                    log(WatchLog::Expired);
                    cursor = None;
                    break;
                }
                Ok(Some(Err(e @ Error::Gap { .. }))) => {
                    log(WatchLog::Gap(e.to_string()));
                    log(WatchLog::Expired);
                    cursor = None;
                    break;
                }
                Ok(Some(Err(_)) | None) => break,
                Err(_) => {
                    // Quiet for a while: still the node that was watched?
                    let same = lock(&world.live).get(&node).is_some_and(|(i, _)| *i == incarnation);
                    if !same {
                        break;
                    }
                }
            }
            items += 1;
        }
    }
}

/// The liveness probe: a write tried until it is acknowledged, or `give_up` passes.
pub(crate) async fn probe(world: Arc<World>, give_up: Duration) -> Option<u64> {
    let deadline = tokio::time::Instant::now() + give_up;
    let client = ClientId(u128::from(0x7072_6f62_u32) << 96);
    let manifest = "apiVersion: v1\nkind: Namespace\nmetadata: {name: probe}";
    let namespace = orch_core::parse_manifests(manifest).expect("valid").remove(0);
    let mut retry = false;
    let mut serial = 1;
    while tokio::time::Instant::now() < deadline {
        for (_, _, cp) in world.live() {
            let request =
                Request { client, serial, acked_below: serial, retry, command: Command::Apply(namespace.clone()) };
            match tokio::time::timeout(ATTEMPT_TIMEOUT, cp.submit(vec![request])).await {
                // Any outcome committed is the write completing (an "expired session" answer
                // too: it went through the log).
                Ok(Ok(_)) => return Some(world.now_ms()),
                Ok(Err(Error::NotLeader { .. })) => {}
                _ => retry = true,
            }
        }
        // The next attempts are a write of their own.
        serial += 1;
        retry = false;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
