//! The gRPC API service (`orch.api.v1.Orch`) over a [`ControlPlane`].
//!
//! Writes go through [`ControlPlane::submit`] with the caller's client id and serial, so a
//! retried write is applied once. A follower answers writes and linearizable reads with
//! UNAVAILABLE and the leader's API address; any node serves stale reads and watches.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{Stream, StreamExt};
use orch_api::convert::{
    change_to_pb, filter_from_parts, key_from_pb, manifest_from_pb, object_from_pb, object_to_pb, request_from_pb,
};
use orch_api::{Error, LIST_OBJECTS_MAX, pb};
use orch_core::apps_v1::Deployment;
use orch_core::{Command, Kind, Object, ObjectKey, Preconditions, PropagationPolicy, State, Success, WatchFilter};
use orch_raft::ControlPlane;
use orch_raft::control_plane::{Consistency, Error as CpError, WatchItem};
use tokio::sync::Semaphore;
use tonic::{Request as GrpcRequest, Response, Status};

use crate::metrics::SharedMetrics;

/// The most watch streams one node serves at once; more are refused (RESOURCE_EXHAUSTED).
pub const WATCHES_MAX: usize = 10_000;
/// The bytes of one snapshot chunk sent to a client.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// The annotation that records why a revision was made.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";

/// Maps a control-plane error to the API's.
pub fn cp_error(e: CpError) -> Error {
    match e {
        CpError::NotLeader { ref api_address, .. } => {
            Error::Unavailable { message: e.to_string(), leader: api_address.clone(), not_proposed: false }
        }
        CpError::Expired(_) => Error::Expired(e.to_string()),
        // A gap is a broken invariant: logged loudly; the client's way out is to relist.
        CpError::Gap { .. } => {
            tracing::error!(error = %e, "a watch stream found a gap in the feed; it ends and its client relists");
            Error::Expired(e.to_string())
        }
        CpError::Invalid(m) if m.contains("Too many") => Error::ResourceExhausted(m),
        CpError::Invalid(m) => Error::Invalid(m),
        CpError::CatchingUp | CpError::Raft(_) | CpError::Shutdown => Error::unavailable(e.to_string()),
        CpError::Storage(_) => Error::Internal(e.to_string()),
    }
}

/// The API service of one node.
#[derive(Clone)]
pub struct ApiService {
    cp: ControlPlane,
    /// Where node heartbeats go (the node lifecycle loop); none: heartbeats are refused.
    loops: Option<orch_raft::leader::LoopSender>,
    metrics: SharedMetrics,
    watches: Arc<Semaphore>,
    watch_message_bytes: usize,
}

type ApiResult<T> = Result<Response<T>, Status>;

impl ApiService {
    /// The service over `cp`, counting into `metrics`.
    pub fn new(cp: ControlPlane, metrics: SharedMetrics) -> Self {
        Self {
            cp,
            loops: None,
            metrics,
            watches: Arc::new(Semaphore::new(WATCHES_MAX)),
            watch_message_bytes: orch_api::watch::WATCH_MESSAGE_BYTES_DEFAULT,
        }
    }

    /// How many bytes of events go into one watch response before the rest of the revision
    /// follows in the next (default [`orch_api::watch::WATCH_MESSAGE_BYTES_DEFAULT`]; at least
    /// one event per response).
    pub fn with_watch_message_bytes(mut self, bytes: usize) -> Self {
        self.watch_message_bytes = bytes.max(1);
        self
    }

    /// Hands node heartbeats to the leader-only loops of `loops` (the node lifecycle
    /// controller, [`orch_raft::controllers::NODE_LIFECYCLE`]).
    #[must_use]
    pub fn with_loops(mut self, loops: orch_raft::leader::LoopSender) -> Self {
        self.loops = Some(loops);
        self
    }

    /// The tonic server of this service, with the API's message limits.
    pub fn server(self) -> pb::orch_server::OrchServer<Self> {
        pb::orch_server::OrchServer::new(self)
            .max_decoding_message_size(orch_api::REQUEST_BYTES_MAX)
            .max_encoding_message_size(orch_api::RESPONSE_BYTES_MAX)
    }

    /// Runs a handler, counting it by method and code.
    async fn timed<T>(&self, method: &'static str, f: impl Future<Output = Result<T, Error>>) -> ApiResult<T> {
        let start = Instant::now();
        let result = f.await;
        let code = result.as_ref().map_or_else(Error::code, |_| tonic::Code::Ok);
        self.metrics.observe(method, code, start.elapsed());
        result.map(Response::new).map_err(Status::from)
    }

    async fn write(&self, id: Option<&pb::WriteId>, command: Command) -> Result<pb::WriteResponse, Error> {
        let request = request_from_pb(id, command)?;
        let outcomes = self.cp.submit(vec![request]).await.map_err(|e| {
            // `submit` answers "not the leader" before anything is appended (its own check, or
            // openraft's ForwardToLeader, which refuses a write before appending it; a write
            // appended and then lost is LogEntryDiscarded, an Error::Raft): sent again, the
            // write is still a first attempt.
            let not_proposed = matches!(e, CpError::NotLeader { .. });
            match cp_error(e) {
                Error::Unavailable { message, leader, .. } => Error::Unavailable { message, leader, not_proposed },
                other => other,
            }
        })?;
        match outcomes.into_iter().next() {
            Some(Ok(success)) => Ok(write_response(&success)),
            Some(Err(e)) => Err(Error::from(&e)),
            None => Err(Error::Internal("the write returned no outcome".to_owned())),
        }
    }

    async fn read<T>(&self, consistency: i32, f: impl FnOnce(&State) -> T) -> Result<T, Error> {
        let consistency = match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Linearizable) => Consistency::Linearizable,
            Ok(pb::Consistency::Stale) => Consistency::Stale,
            Err(_) => return Err(Error::Invalid(format!("consistency: Unsupported value: {consistency}"))),
        };
        self.cp.read(consistency, f).await.map_err(cp_error)
    }
}

/// The objects of a create or an apply of several: at least one, at most `APPLY_OBJECTS_MAX`.
fn objects_from_pb(objects: &[pb::Object]) -> Result<Vec<orch_core::Object>, Error> {
    check_object_count(objects)?;
    objects.iter().enumerate().map(|(i, o)| object_from_pb(Some(o), &format!("objects[{i}]"))).collect()
}

/// The manifests of an apply, as submitted (JSON text), each checked to describe an object.
fn manifests_from_pb(objects: &[pb::Object]) -> Result<Vec<String>, Error> {
    check_object_count(objects)?;
    objects.iter().enumerate().map(|(i, o)| Ok(manifest_from_pb(Some(o), &format!("objects[{i}]"))?.0)).collect()
}

fn check_object_count(objects: &[pb::Object]) -> Result<(), Error> {
    if objects.is_empty() {
        return Err(Error::Invalid("objects: Required value".to_owned()));
    }
    if objects.len() > orch_api::APPLY_OBJECTS_MAX {
        return Err(Error::ResourceExhausted(format!(
            "objects: Too many: {}: must have at most {} items",
            objects.len(),
            orch_api::APPLY_OBJECTS_MAX
        )));
    }
    Ok(())
}

/// One command needs no batch; several are written all or none.
fn one_or_batch(mut commands: Vec<Command>) -> Command {
    if commands.len() == 1 { commands.swap_remove(0) } else { Command::Batch(commands) }
}

fn write_response(success: &Success) -> pb::WriteResponse {
    pb::WriteResponse { revision: success.revision.0, changes: success.changes.iter().map(change_to_pb).collect() }
}

fn deployment_of(state: &State, namespace: &str, name: &str) -> Result<Arc<Deployment>, Error> {
    let key = ObjectKey::new(Kind::Deployment, namespace, name);
    match state.get(&key) {
        Some(Object::Deployment(d)) => Ok(Arc::clone(d)),
        _ => Err(Error::NotFound(format!("{key} not found"))),
    }
}

/// A namespace does not narrow a cluster-scoped kind (nodes, namespaces), as in kubectl.
fn scoped(mut filter: WatchFilter) -> WatchFilter {
    if filter.kind.is_some_and(|k| !k.namespaced()) {
        filter.namespace = None;
    }
    filter
}

fn namespace_or_default(namespace: &str) -> &str {
    if namespace.is_empty() { "default" } else { namespace }
}

type WatchResponseStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;
type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::orch_server::Orch for ApiService {
    async fn create(&self, request: GrpcRequest<pb::CreateRequest>) -> ApiResult<pb::WriteResponse> {
        let r = request.into_inner();
        self.timed("Create", async {
            if r.objects.is_empty() {
                let object = object_from_pb(r.object.as_ref(), "object")?;
                return self.write(r.id.as_ref(), Command::Create(object)).await;
            }
            if r.object.is_some() {
                return Err(Error::Invalid("object: Forbidden: give object or objects, not both".to_owned()));
            }
            let objects = objects_from_pb(&r.objects)?;
            self.write(r.id.as_ref(), one_or_batch(objects.into_iter().map(Command::Create).collect())).await
        })
        .await
    }

    async fn get(&self, request: GrpcRequest<pb::GetRequest>) -> ApiResult<pb::GetResponse> {
        let r = request.into_inner();
        self.timed("Get", async {
            let key = key_from_pb(r.key.as_ref(), "key")?;
            let (object, revision) = self.read(r.consistency, |s| (s.get(&key).cloned(), s.applied_index())).await?;
            let object = object.ok_or_else(|| Error::NotFound(format!("{key} not found")))?;
            Ok(pb::GetResponse { object: Some(object_to_pb(&object)), revision })
        })
        .await
    }

    async fn list(&self, request: GrpcRequest<pb::ListRequest>) -> ApiResult<pb::ListResponse> {
        let r = request.into_inner();
        self.timed("List", async {
            let filter = scoped(filter_from_parts(&r.kind, &r.namespace, &r.label_selector, &r.node_name, &r.field_selector)?);
            let kind = filter.kind.ok_or_else(|| Error::Invalid("kind: Required value".to_owned()))?;
            let (objects, revision) = self
                .read(r.consistency, |s| {
                    let objects: Vec<Object> = s
                        .list(kind, filter.namespace.as_deref())
                        .filter(|o| filter.matches(o))
                        .take(LIST_OBJECTS_MAX + 1)
                        .cloned()
                        .collect();
                    (objects, s.applied_index())
                })
                .await?;
            if objects.len() > LIST_OBJECTS_MAX {
                return Err(Error::ResourceExhausted(format!(
                    "the list holds more than {LIST_OBJECTS_MAX} objects; narrow it with a namespace or a label selector"
                )));
            }
            Ok(pb::ListResponse { objects: objects.iter().map(object_to_pb).collect(), revision })
        })
        .await
    }

    async fn update(&self, request: GrpcRequest<pb::UpdateRequest>) -> ApiResult<pb::WriteResponse> {
        let r = request.into_inner();
        self.timed("Update", async {
            let object = object_from_pb(r.object.as_ref(), "object")?;
            self.write(r.id.as_ref(), Command::Update(object)).await
        })
        .await
    }

    async fn update_status(&self, request: GrpcRequest<pb::UpdateRequest>) -> ApiResult<pb::WriteResponse> {
        let r = request.into_inner();
        self.timed("UpdateStatus", async {
            let object = object_from_pb(r.object.as_ref(), "object")?;
            self.write(r.id.as_ref(), Command::UpdateStatus(object)).await
        })
        .await
    }

    async fn delete(&self, request: GrpcRequest<pb::DeleteRequest>) -> ApiResult<pb::WriteResponse> {
        let r = request.into_inner();
        self.timed("Delete", async {
            let key = key_from_pb(r.key.as_ref(), "key")?;
            let uid = r
                .uid
                .as_deref()
                .map(str::parse::<orch_core::ids::Uid>)
                .transpose()
                .map_err(|_| Error::Invalid("uid: must be a UUID".to_owned()))?;
            let preconditions = Preconditions { uid, resource_version: r.resource_version.map(orch_core::Revision) };
            let propagation_policy =
                r.propagation_policy.as_deref().map(PropagationPolicy::parse).transpose().map_err(Error::Invalid)?;
            let command = Command::Delete {
                key,
                grace_period_seconds: r.grace_period_seconds,
                preconditions,
                propagation_policy,
            };
            self.write(r.id.as_ref(), command).await
        })
        .await
    }

    async fn apply(&self, request: GrpcRequest<pb::ApplyRequest>) -> ApiResult<pb::WriteResponse> {
        let r = request.into_inner();
        self.timed("Apply", async {
            // The manifests as submitted: the state machine merges each into its live object.
            let manifests = manifests_from_pb(&r.objects)?;
            self.write(r.id.as_ref(), one_or_batch(manifests.into_iter().map(Command::ApplyManifest).collect())).await
        })
        .await
    }

    async fn bind(&self, request: GrpcRequest<pb::BindRequest>) -> ApiResult<pb::WriteResponse> {
        let r = request.into_inner();
        self.timed("Bind", async {
            let command = Command::Bind {
                namespace: namespace_or_default(&r.namespace).to_owned(),
                name: r.name,
                node: r.node,
                preconditions: Preconditions::default(),
            };
            self.write(r.id.as_ref(), command).await
        })
        .await
    }

    async fn scale(&self, request: GrpcRequest<pb::ScaleRequest>) -> ApiResult<pb::WriteResponse> {
        let r = request.into_inner();
        self.timed("Scale", async {
            // One command, applied to the object as it is then, under the caller's write id: a
            // retry gets the first outcome and cannot undo a later scale.
            let key = key_from_pb(r.key.as_ref(), "key")?;
            self.write(r.id.as_ref(), Command::Scale { key, replicas: r.replicas }).await
        })
        .await
    }

    async fn rollout_history(
        &self,
        request: GrpcRequest<pb::RolloutHistoryRequest>,
    ) -> ApiResult<pb::RolloutHistoryResponse> {
        let r = request.into_inner();
        self.timed("RolloutHistory", async {
            let namespace = namespace_or_default(&r.namespace).to_owned();
            let revisions = self
                .read(pb::Consistency::Linearizable.into(), |s| {
                    let d = deployment_of(s, &namespace, &r.name)?;
                    Ok::<_, Error>(
                        s.owned_replica_sets(&d)
                            .iter()
                            .filter_map(|rs| {
                                Some(pb::RolloutRevision {
                                    revision: rs.revision()?,
                                    replica_set: rs.metadata.name.to_string(),
                                    change_cause: rs
                                        .metadata
                                        .annotations
                                        .get(CHANGE_CAUSE_ANNOTATION)
                                        .unwrap_or_default()
                                        .to_owned(),
                                    images: rs
                                        .spec
                                        .template
                                        .spec
                                        .containers
                                        .iter()
                                        .map(|c| c.image.to_string())
                                        .collect(),
                                })
                            })
                            .collect(),
                    )
                })
                .await??;
            Ok(pb::RolloutHistoryResponse { revisions })
        })
        .await
    }

    async fn rollout_undo(&self, request: GrpcRequest<pb::RolloutUndoRequest>) -> ApiResult<pb::WriteResponse> {
        let r = request.into_inner();
        self.timed("RolloutUndo", async {
            let namespace = namespace_or_default(&r.namespace).to_owned();
            let command = Command::RolloutUndo { namespace, name: r.name, to_revision: r.to_revision };
            self.write(r.id.as_ref(), command).await
        })
        .await
    }

    type WatchStream = WatchResponseStream;

    async fn watch(&self, request: GrpcRequest<pb::WatchRequest>) -> ApiResult<Self::WatchStream> {
        let r = request.into_inner();
        self.timed("Watch", async {
            let filter =
                scoped(filter_from_parts(&r.kind, &r.namespace, &r.label_selector, &r.node_name, &r.field_selector)?);
            let permit = Arc::clone(&self.watches).try_acquire_owned().map_err(|_| {
                Error::ResourceExhausted(format!("this node serves at most {WATCHES_MAX} watches; try another"))
            })?;
            // 0 means "from now" here as in the control plane; the stream's first response
            // is progress naming the revision it starts at.
            let stream = self.cp.watch(r.from_revision, filter).map_err(cp_error)?;
            let gauge = self.metrics.watches.clone();
            gauge.inc();
            let guard = WatchGuard { gauge, _permit: permit };
            let message_bytes = self.watch_message_bytes;
            let stream = stream.flat_map(move |item| {
                let _held = &guard;
                // A revision's responses are made one at a time as the client takes them.
                let responses: Box<dyn Iterator<Item = Result<pb::WatchResponse, Status>> + Send> = match item {
                    Ok(WatchItem::Events { revision, events }) => {
                        Box::new(orch_api::watch::Fragments::new(revision, events, message_bytes).map(Ok))
                    }
                    Ok(WatchItem::Progress { revision }) => {
                        Box::new(std::iter::once(Ok(orch_api::watch::progress(revision))))
                    }
                    Err(e) => Box::new(std::iter::once(Err(Status::from(cp_error(e))))),
                };
                futures_util::stream::iter(responses)
            });
            Ok(Box::pin(stream) as Self::WatchStream)
        })
        .await
    }

    async fn members(&self, _request: GrpcRequest<pb::MembersRequest>) -> ApiResult<pb::MembersResponse> {
        self.timed("Members", async { Ok(members_response(&self.cp)) }).await
    }

    async fn add_member(&self, request: GrpcRequest<pb::AddMemberRequest>) -> ApiResult<pb::MembersResponse> {
        let r = request.into_inner();
        self.timed("AddMember", async {
            if r.id == 0 {
                return Err(Error::Invalid("id: Invalid value: 0: must be >= 1".to_owned()));
            }
            if r.raft_address.is_empty() {
                return Err(Error::Invalid("raftAddress: Required value".to_owned()));
            }
            let member = orch_raft::Member::new(r.raft_address, r.api_address);
            self.cp.add_member(r.id, member).await.map_err(cp_error)?;
            Ok(members_response(&self.cp))
        })
        .await
    }

    async fn remove_member(&self, request: GrpcRequest<pb::RemoveMemberRequest>) -> ApiResult<pb::MembersResponse> {
        let r = request.into_inner();
        self.timed("RemoveMember", async {
            // Only the confirmed leader's view of the members says "no such member"
            // (`ControlPlane::remove_member`): a follower's, or a deposed leader's, may miss a
            // member added since; they redirect the client.
            self.cp.remove_member(r.id).await.map_err(|e| match e {
                CpError::Invalid(m) if m.starts_with("id: Not found") => {
                    Error::NotFound(format!("member {} not found", r.id))
                }
                e => cp_error(e),
            })?;
            Ok(members_response(&self.cp))
        })
        .await
    }

    async fn status(&self, _request: GrpcRequest<pb::StatusRequest>) -> ApiResult<pb::StatusResponse> {
        self.timed("Status", async {
            let m = self.cp.metrics();
            let objects = self
                .cp
                .read(Consistency::Stale, crate::metrics::count_objects)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|(kind, count)| pb::KindCount { kind: kind.as_str().to_owned(), count })
                .collect();
            Ok(pb::StatusResponse {
                id: m.id,
                term: m.term,
                leader: m.leader.unwrap_or(0),
                role: m.role,
                commit_index: m.commit_index,
                applied_index: m.applied_index,
                last_log_index: m.last_log_index,
                snapshot_index: m.snapshot_index,
                purged_index: m.purged_index,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                objects,
            })
        })
        .await
    }

    type SnapshotStream = SnapshotStream;

    async fn heartbeat(&self, request: GrpcRequest<pb::HeartbeatRequest>) -> ApiResult<pb::HeartbeatResponse> {
        let node = request.into_inner().node;
        self.timed("Heartbeat", async {
            if let Some(rule) = orch_core::validation::is_dns1123_subdomain(&node) {
                // The value is quoted within its bound only: a long name is not echoed whole.
                let shown: String = node.chars().take(253).collect();
                return Err(Error::Invalid(format!(
                    "node: Invalid value: {}: {rule}",
                    orch_core::validation::q(&shown)
                )));
            }
            self.cp.check_lease().map_err(cp_error)?;
            let key = ObjectKey::new(Kind::Node, "", &node);
            if !self.read(pb::Consistency::Stale as i32, |s| s.get(&key).is_some()).await? {
                return Err(Error::NotFound(format!("{key} not found")));
            }
            let Some(loops) = &self.loops else {
                return Err(Error::unavailable("this server runs no node lifecycle controller".to_owned()));
            };
            let beat = orch_core::reconcile::Message::Heartbeat { node: node.clone() };
            match loops.send_latest(orch_raft::controllers::NODE_LIFECYCLE, &node, Box::new(beat)) {
                Ok(()) => Ok(pb::HeartbeatResponse {}),
                // The loop has not started yet (this node was just elected), or is swamped:
                // the agent's next heartbeat comes soon enough.
                Err(e) => Err(Error::unavailable(e.to_string())),
            }
        })
        .await
    }

    async fn snapshot(&self, _request: GrpcRequest<pb::SnapshotRequest>) -> ApiResult<Self::SnapshotStream> {
        self.timed("Snapshot", async {
            // Encoded from a copy of the state, on a blocking thread: apply goes on meanwhile.
            let state = self.cp.state(Consistency::Linearizable).await.map_err(cp_error)?;
            let (revision, bytes) = tokio::task::spawn_blocking(move || (state.applied_index(), state.to_snapshot()))
                .await
                .map_err(|e| Error::Internal(format!("encoding the snapshot: {e}")))?;
            let bytes = bytes::Bytes::from(bytes);
            let total = bytes.len() as u64;
            let chunks: Vec<bytes::Bytes> = if bytes.is_empty() {
                vec![bytes::Bytes::new()]
            } else {
                (0..bytes.len())
                    .step_by(SNAPSHOT_CHUNK_BYTES)
                    .map(|at| bytes.slice(at..(at + SNAPSHOT_CHUNK_BYTES).min(bytes.len())))
                    .collect()
            };
            let stream = futures_util::stream::iter(chunks.into_iter().enumerate().map(move |(i, data)| {
                Ok(pb::SnapshotChunk {
                    revision: if i == 0 { revision } else { 0 },
                    total_bytes: if i == 0 { total } else { 0 },
                    data,
                })
            }));
            Ok(Box::pin(stream) as Self::SnapshotStream)
        })
        .await
    }
}

/// Holds a watch's slot and gauge for as long as its stream lives.
struct WatchGuard {
    gauge: prometheus_client::metrics::gauge::Gauge,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

fn members_response(cp: &ControlPlane) -> pb::MembersResponse {
    let members = cp.members();
    let list = |map: &std::collections::BTreeMap<u64, orch_raft::Member>, voter: bool| -> Vec<pb::Member> {
        map.iter()
            .map(|(id, m)| pb::Member { id: *id, raft_address: m.addr.clone(), api_address: m.api_addr.clone(), voter })
            .collect()
    };
    let mut all = list(&members.voters, true);
    all.extend(list(&members.learners, false));
    all.sort_by_key(|m| m.id);
    pb::MembersResponse { members: all, leader: cp.metrics().leader.unwrap_or(0) }
}
