//! The Raft transport over gRPC (tonic): append entries, vote, and snapshots streamed in
//! bounded chunks. The protocol is `orch-raft/proto/raft.proto`.
//!
//! Client side, [`GrpcNetwork`] keeps one lazily connected channel per peer (replaced when the
//! peer's address changes), puts openraft's deadline on every call, and reports a peer it cannot
//! reach as unreachable so that openraft backs off. Server side, [`RaftService`] hands requests
//! to the local Raft node; a snapshot is installed only once its stream ended complete, so a
//! broken transfer leaves the follower as it was.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{Either, select};
use openraft::LogId;
use openraft::alias::{LogIdOf, SnapshotOf, VoteOf};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::impls::leader_id_adv::LeaderId;
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderError, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::Snapshot;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::{Member, RaftNode, SnapshotBytes, StateMachineStore, TypeConfig, codec, lock};

type C = TypeConfig;

/// The generated protocol types and service stubs.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("orch.raft.v1");
}

use proto::raft_client::RaftClient;
use proto::raft_server::{Raft as RaftRpc, RaftServer};

/// The largest single Raft message (an append with its entries) sent or accepted.
pub const RPC_MESSAGE_BYTES_MAX: usize = 64 << 20;

/// The slowest link a snapshot or an append is expected to cross, in bytes per second: the
/// deadline of a call that carries bytes allows this rate on top of openraft's TTL.
pub const TRANSFER_BYTES_PER_SECOND_MIN: u64 = 1 << 20;

/// The deadline of a call that carries `bytes` (openraft's `hard_ttl`: for a snapshot its
/// `install_snapshot_timeout`, 200 ms by default; for an append the heartbeat interval,
/// 100 ms by default). It was `hard_ttl` alone, which the server enforces too (tonic honours the
/// `grpc-timeout` header) over the whole call: a snapshot slower than 200 ms to send and
/// install, or an append slower than 100 ms, was cut and resent from the start, forever over a
/// slow link. (On a fast link a large snapshot still "worked": openraft goes on installing
/// after the handler is dropped, and the resend finds it installed.) openraft's docs say as
/// much: for a long stream `hard_ttl` is not a limit on its lifetime.
fn transfer_deadline(hard_ttl: Duration, bytes: usize) -> Duration {
    hard_ttl + Duration::from_secs_f64(bytes as f64 / TRANSFER_BYTES_PER_SECOND_MIN as f64)
}

/// The most bytes of entries one append carries: the log reader hands openraft's replication
/// at most this much per append (`RocksLogReader::limited_get_log_entries`), so an append
/// always fits one message with half of [`RPC_MESSAGE_BYTES_MAX`] to spare and is never too
/// large to send (and resent forever). An entry is at most `orch_core::codec::ENTRY_BYTES_MAX`,
/// so every entry fits one append.
pub const APPEND_BYTES_MAX: usize = RPC_MESSAGE_BYTES_MAX / 2;

/// The most bytes an entry's framing adds around its payload in an append: the format tag,
/// the log id (three varints), the payload tag and the protobuf field header.
pub const ENTRY_FRAMING_BYTES_MAX: usize = 64;

const _: () = assert!(orch_core::codec::ENTRY_BYTES_MAX + ENTRY_FRAMING_BYTES_MAX <= APPEND_BYTES_MAX);

/// The largest snapshot a node accepts.
pub const SNAPSHOT_BYTES_MAX: u64 = 8 << 30;

/// The default size of one snapshot chunk.
pub const SNAPSHOT_CHUNK_BYTES_DEFAULT: usize = 1 << 20;

/// The most peers one node keeps channels to.
pub const PEERS_MAX: usize = 64;

/// How long connecting to a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

// --- conversions -------------------------------------------------------------------------

fn vote_to_pb(vote: &VoteOf<C>) -> proto::Vote {
    let leader = vote.leader_id();
    proto::Vote {
        leader_id: Some(proto::LeaderId { term: leader.term, node_id: leader.node_id }),
        committed: vote.is_committed(),
    }
}

fn vote_from_pb(vote: Option<proto::Vote>, field: &str) -> Result<VoteOf<C>, Status> {
    let vote = vote.ok_or_else(|| Status::invalid_argument(format!("{field}: Required value")))?;
    let leader = vote.leader_id.ok_or_else(|| Status::invalid_argument(format!("{field}.leaderId: Required value")))?;
    Ok(if vote.committed {
        VoteOf::<C>::new_committed(leader.term, leader.node_id)
    } else {
        VoteOf::<C>::new(leader.term, leader.node_id)
    })
}

fn log_id_to_pb(id: &LogIdOf<C>) -> proto::LogId {
    proto::LogId {
        leader_id: Some(proto::LeaderId { term: id.leader_id.term, node_id: id.leader_id.node_id }),
        index: id.index,
    }
}

fn log_id_from_pb(id: Option<proto::LogId>, field: &str) -> Result<Option<LogIdOf<C>>, Status> {
    let Some(id) = id else { return Ok(None) };
    let leader = id.leader_id.ok_or_else(|| Status::invalid_argument(format!("{field}.leaderId: Required value")))?;
    Ok(Some(LogId::new(LeaderId { term: leader.term, node_id: leader.node_id }, id.index)))
}

fn append_request_to_pb(rpc: &AppendEntriesRequest<C>) -> proto::AppendEntriesRequest {
    proto::AppendEntriesRequest {
        vote: Some(vote_to_pb(&rpc.vote)),
        prev_log_id: rpc.prev_log_id.as_ref().map(log_id_to_pb),
        entries: rpc.entries.iter().map(codec::encode_entry).collect(),
        leader_commit: rpc.leader_commit.as_ref().map(log_id_to_pb),
    }
}

fn append_request_from_pb(rpc: proto::AppendEntriesRequest) -> Result<AppendEntriesRequest<C>, Status> {
    let entries = rpc
        .entries
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            codec::decode_entry(bytes).map_err(|e| Status::invalid_argument(format!("entries[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(rpc.vote, "vote")?,
        prev_log_id: log_id_from_pb(rpc.prev_log_id, "prevLogId")?,
        entries,
        leader_commit: log_id_from_pb(rpc.leader_commit, "leaderCommit")?,
    })
}

fn append_response_to_pb(resp: &AppendEntriesResponse<C>) -> proto::AppendEntriesResponse {
    use proto::append_entries_response::Result as R;
    let result = match resp {
        AppendEntriesResponse::Success => R::Success(proto::Empty {}),
        AppendEntriesResponse::PartialSuccess(id) => {
            R::PartialSuccess(proto::PartialSuccess { matching: id.as_ref().map(log_id_to_pb) })
        }
        AppendEntriesResponse::Conflict => R::Conflict(proto::Empty {}),
        AppendEntriesResponse::HigherVote(vote) => R::HigherVote(vote_to_pb(vote)),
    };
    proto::AppendEntriesResponse { result: Some(result) }
}

fn append_response_from_pb(resp: proto::AppendEntriesResponse) -> Result<AppendEntriesResponse<C>, Status> {
    use proto::append_entries_response::Result as R;
    Ok(match resp.result {
        Some(R::Success(_)) => AppendEntriesResponse::Success,
        Some(R::PartialSuccess(p)) => AppendEntriesResponse::PartialSuccess(log_id_from_pb(p.matching, "matching")?),
        Some(R::Conflict(_)) => AppendEntriesResponse::Conflict,
        Some(R::HigherVote(v)) => AppendEntriesResponse::HigherVote(vote_from_pb(Some(v), "higherVote")?),
        None => return Err(Status::invalid_argument("result: Required value")),
    })
}

fn vote_request_to_pb(rpc: &VoteRequest<C>) -> proto::VoteRequest {
    proto::VoteRequest {
        vote: Some(vote_to_pb(&rpc.vote)),
        last_log_id: rpc.last_log_id.as_ref().map(log_id_to_pb),
        leadership_transfer: rpc.leadership_transfer,
    }
}

fn vote_request_from_pb(rpc: proto::VoteRequest) -> Result<VoteRequest<C>, Status> {
    let mut req = VoteRequest::new(vote_from_pb(rpc.vote, "vote")?, log_id_from_pb(rpc.last_log_id, "lastLogId")?);
    req.leadership_transfer = rpc.leadership_transfer;
    Ok(req)
}

fn vote_response_to_pb(resp: &VoteResponse<C>) -> proto::VoteResponse {
    proto::VoteResponse {
        vote: Some(vote_to_pb(&resp.vote)),
        vote_granted: resp.vote_granted,
        last_log_id: resp.last_log_id.as_ref().map(log_id_to_pb),
    }
}

fn vote_response_from_pb(resp: proto::VoteResponse) -> Result<VoteResponse<C>, Status> {
    Ok(VoteResponse::new(
        vote_from_pb(resp.vote, "vote")?,
        log_id_from_pb(resp.last_log_id, "lastLogId")?,
        resp.vote_granted,
    ))
}

fn transfer_request_to_pb(req: &TransferLeaderRequest<C>) -> proto::TransferLeaderRequest {
    proto::TransferLeaderRequest {
        from_leader: Some(vote_to_pb(req.from_leader())),
        to_node_id: *req.to_node_id(),
        last_log_id: req.last_log_id().map(log_id_to_pb),
    }
}

fn transfer_request_from_pb(req: proto::TransferLeaderRequest) -> Result<TransferLeaderRequest<C>, Status> {
    Ok(TransferLeaderRequest::new(
        vote_from_pb(req.from_leader, "fromLeader")?,
        req.to_node_id,
        log_id_from_pb(req.last_log_id, "lastLogId")?,
    ))
}

fn transfer_response_to_pb(resp: &TransferLeaderResponse<C>) -> proto::TransferLeaderResponse {
    use proto::transfer_leader_response::Result as R;
    let result = match resp {
        Ok(()) => R::Ok(proto::Empty {}),
        Err(TransferLeaderError::VoteChanged { expected, actual }) => R::VoteChanged(proto::VoteChanged {
            expected: Some(vote_to_pb(expected)),
            actual: Some(vote_to_pb(actual)),
        }),
        Err(TransferLeaderError::LogNotFlushed { expected, actual }) => R::LogNotFlushed(proto::LogNotFlushed {
            expected: expected.as_ref().map(log_id_to_pb),
            actual: actual.as_ref().map(log_id_to_pb),
        }),
    };
    proto::TransferLeaderResponse { result: Some(result) }
}

fn transfer_response_from_pb(resp: proto::TransferLeaderResponse) -> Result<TransferLeaderResponse<C>, Status> {
    use proto::transfer_leader_response::Result as R;
    Ok(match resp.result {
        Some(R::Ok(_)) => Ok(()),
        Some(R::VoteChanged(v)) => Err(TransferLeaderError::VoteChanged {
            expected: vote_from_pb(v.expected, "voteChanged.expected")?,
            actual: vote_from_pb(v.actual, "voteChanged.actual")?,
        }),
        Some(R::LogNotFlushed(l)) => Err(TransferLeaderError::LogNotFlushed {
            expected: log_id_from_pb(l.expected, "logNotFlushed.expected")?,
            actual: log_id_from_pb(l.actual, "logNotFlushed.actual")?,
        }),
        None => return Err(Status::invalid_argument("result: Required value")),
    })
}

// --- client ------------------------------------------------------------------------------

/// The client side of the transport: openraft's network factory. Clones share the channels.
#[derive(Clone)]
pub struct GrpcNetwork {
    id: u64,
    chunk_bytes: usize,
    channels: Arc<Mutex<BTreeMap<u64, (String, Channel)>>>,
}

impl GrpcNetwork {
    /// The network of node `id`, sending snapshots in chunks of `chunk_bytes` (at least 1).
    pub fn new(id: u64, chunk_bytes: usize) -> Self {
        Self { id, chunk_bytes: chunk_bytes.max(1), channels: Arc::default() }
    }

    /// The cached channel to `target` at `addr`, connecting lazily.
    fn channel(&self, target: u64, addr: &str) -> Result<Channel, Unreachable<C>> {
        let mut channels = lock(&self.channels);
        if let Some((cached, channel)) = channels.get(&target)
            && cached == addr
        {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Unreachable::new(&e))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = endpoint.connect_lazy();
        if channels.len() >= PEERS_MAX && !channels.contains_key(&target) {
            // A member set this large is refused elsewhere; drop the oldest-numbered entry.
            if let Some(first) = channels.keys().next().copied() {
                channels.remove(&first);
            }
        }
        channels.insert(target, (addr.to_owned(), channel.clone()));
        Ok(channel)
    }
}

/// A connection to one peer.
pub struct GrpcConnection {
    network: GrpcNetwork,
    target: u64,
    addr: String,
}

impl RaftNetworkFactory<C> for GrpcNetwork {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: u64, node: &Member) -> Self::Network {
        GrpcConnection { network: self.clone(), target, addr: node.addr.clone() }
    }
}

/// Why a call failed, as openraft needs to know it.
fn rpc_error(status: Status, action: RPCTypes, id: u64, target: u64, ttl: Duration) -> RPCError<C> {
    match status.code() {
        Code::DeadlineExceeded | Code::Cancelled => RPCError::Timeout(Timeout { action, id, target, timeout: ttl }),
        Code::Unavailable | Code::Unknown => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

impl GrpcConnection {
    fn client(&self) -> Result<RaftClient<Channel>, Unreachable<C>> {
        let channel = self.network.channel(self.target, &self.addr)?;
        Ok(RaftClient::new(channel)
            .max_decoding_message_size(RPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RPC_MESSAGE_BYTES_MAX))
    }

    fn timeout(&self, action: RPCTypes, ttl: Duration) -> Timeout<C> {
        Timeout { action, id: self.network.id, target: self.target, timeout: ttl }
    }

    /// Awaits one unary call within `ttl`, and decodes its reply with `decode`.
    async fn unary<T, R>(
        &self,
        action: RPCTypes,
        ttl: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
        decode: impl FnOnce(T) -> Result<R, Status>,
    ) -> Result<R, RPCError<C>> {
        let reply = tokio::time::timeout(ttl, call)
            .await
            .map_err(|_| self.timeout(action, ttl))?
            .map_err(|s| rpc_error(s, action, self.network.id, self.target, ttl))?;
        decode(reply.into_inner()).map_err(|s| RPCError::Network(NetworkError::new(&s)))
    }
}

fn with_deadline<T>(message: T, ttl: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(ttl);
    request
}

impl RaftNetworkV2<C> for GrpcConnection {
    type SnapshotData = SnapshotBytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let request = append_request_to_pb(&rpc);
        let ttl = transfer_deadline(option.hard_ttl(), request.entries.iter().map(Vec::len).sum());
        let mut client = self.client()?;
        let call = client.append_entries(with_deadline(request, ttl));
        self.unary(RPCTypes::AppendEntries, ttl, call, append_response_from_pb).await
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        let ttl = option.hard_ttl();
        let mut client = self.client()?;
        let call = client.vote(with_deadline(vote_request_to_pb(&rpc), ttl));
        self.unary(RPCTypes::Vote, ttl, call, vote_response_from_pb).await
    }

    async fn pre_vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        let ttl = option.hard_ttl();
        let mut client = self.client()?;
        let call = client.pre_vote(with_deadline(vote_request_to_pb(&rpc), ttl));
        self.unary(RPCTypes::Vote, ttl, call, vote_response_from_pb).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        let ttl = option.hard_ttl();
        let mut client = self.client()?;
        let call = client.transfer_leader(with_deadline(transfer_request_to_pb(&req), ttl));
        self.unary(RPCTypes::TransferLeader, ttl, call, transfer_response_from_pb).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, SnapshotBytes>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let data = snapshot.snapshot;
        let len = data.len();
        let ttl = transfer_deadline(option.hard_ttl(), usize::try_from(len).unwrap_or(usize::MAX));
        let header = proto::SnapshotHeader {
            vote: Some(vote_to_pb(&vote)),
            meta: codec::encode_snapshot_meta(&snapshot.meta),
            total_bytes: len,
        };
        // Read chunk by chunk as the stream is sent (from the snapshot file, or the bytes in
        // memory). A chunk that cannot be read ends the stream short, which the receiver
        // refuses.
        let chunk_bytes = self.network.chunk_bytes;
        let chunks = futures_util::stream::unfold(Some((0u64, Some(header))), move |next| {
            let data = data.clone();
            async move {
                let (pos, header) = next?;
                let n = usize::try_from(len - pos).unwrap_or(usize::MAX).min(chunk_bytes);
                let bytes = data.read_chunk(pos, n).await.ok()?;
                let end = pos + n as u64;
                Some((proto::SnapshotChunk { header, data: bytes }, (end < len).then_some((end, None))))
            }
        });
        let mut client = self.client()?;
        let call = pin!(client.install_snapshot(with_deadline(chunks, ttl)));
        let reply = match select(call, pin!(cancel)).await {
            Either::Left((reply, _)) => reply,
            Either::Right((closed, _)) => return Err(StreamingError::Closed(closed)),
        };
        let reply =
            reply.map_err(|s| match rpc_error(s, RPCTypes::InstallSnapshot, self.network.id, self.target, ttl) {
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&r)),
            })?;
        let vote = vote_from_pb(reply.into_inner().vote, "vote")
            .map_err(|s| StreamingError::Network(NetworkError::new(&s)))?;
        Ok(SnapshotResponse::new(vote))
    }
}

// --- server ------------------------------------------------------------------------------

/// The server side of the transport: hands requests to the local Raft node.
#[derive(Clone)]
pub struct RaftService {
    raft: RaftNode,
    /// Where received snapshots go (its snapshot directory, as they arrive).
    state_machine: StateMachineStore,
    /// Held while a snapshot is received and installed ([`SNAPSHOT_INSTALLS_MAX`]).
    installs: Arc<tokio::sync::Semaphore>,
}

/// The most snapshot streams a node receives at once; another is refused (resource exhausted)
/// and its leader retries later. One leader sends a follower one snapshot at a time, so a second
/// stream comes from a deposed leader, a resend racing the end of the first (harmless), or a
/// client that is not a leader at all.
pub const SNAPSHOT_INSTALLS_MAX: usize = 1;

/// The longest a snapshot stream may go without a chunk before it is dropped (and the install
/// slot freed): a sender that froze or vanished mid-stream does not block later installs.
pub const SNAPSHOT_CHUNK_WAIT: Duration = Duration::from_secs(30);

/// A snapshot header that is consistent: a last log id (a snapshot of nothing is never sent),
/// within the sender's vote (openraft asserts that a snapshot's last log id is not owned by a
/// leader newer than the one installing it), and a membership no newer than the snapshot.
/// openraft's other assertion, that the snapshot is beyond the locally committed index, depends
/// on the local state and is not checked here.
fn check_snapshot_header(vote: &VoteOf<C>, meta: &openraft::alias::SnapshotMetaOf<C>) -> Result<(), Status> {
    let Some(last) = &meta.last_log_id else {
        return Err(Status::invalid_argument("header.meta.lastLogId: Required value"));
    };
    if last.leader_id > *vote.leader_id() {
        return Err(Status::invalid_argument(format!(
            "header.meta.lastLogId: Invalid value: {last}: owned by a leader newer than the sender's vote {vote}"
        )));
    }
    if meta.last_membership.log_id().as_ref().is_some_and(|m| m > last) {
        return Err(Status::invalid_argument(format!(
            "header.meta.lastMembership: Invalid value: {}: newer than the snapshot's last log id {last}",
            meta.last_membership.log_id().as_ref().map(ToString::to_string).unwrap_or_default()
        )));
    }
    Ok(())
}

/// The next chunk of a snapshot stream, within [`SNAPSHOT_CHUNK_WAIT`].
async fn next_chunk(
    stream: &mut tonic::Streaming<proto::SnapshotChunk>,
) -> Result<Option<proto::SnapshotChunk>, Status> {
    tokio::time::timeout(SNAPSHOT_CHUNK_WAIT, stream.message()).await.map_err(|_| {
        Status::deadline_exceeded(format!(
            "no snapshot chunk for {}s; the stream is dropped",
            SNAPSHOT_CHUNK_WAIT.as_secs()
        ))
    })?
}

impl RaftService {
    /// The tonic service for `raft` on `state_machine`, with orch's message size limits.
    pub fn server(raft: RaftNode, state_machine: StateMachineStore) -> RaftServer<Self> {
        let installs = Arc::new(tokio::sync::Semaphore::new(SNAPSHOT_INSTALLS_MAX));
        RaftServer::new(Self { raft, state_machine, installs })
            .max_decoding_message_size(RPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RPC_MESSAGE_BYTES_MAX)
    }
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(e.to_string())
}

impl RaftService {
    /// Receives a snapshot's bytes, from `first` (the first chunk's data) to the end of
    /// `stream`: into a temporary file as they arrive (memory for a store without a directory),
    /// so memory grows neither with the snapshot nor with what the header claims.
    async fn receive_snapshot(
        &self,
        meta: &openraft::alias::SnapshotMetaOf<C>,
        total: u64,
        first: bytes::Bytes,
        stream: &mut tonic::Streaming<proto::SnapshotChunk>,
    ) -> Result<SnapshotBytes, Status> {
        let io_error = |e: std::io::Error| Status::internal(format!("receiving the snapshot: {e}"));
        let mut sink = self.state_machine.snapshot_sink(meta, total).await.map_err(io_error)?;
        let mut chunk = first;
        loop {
            if sink.received() + chunk.len() as u64 > total {
                return Err(Status::invalid_argument("data: the chunks exceed header.totalBytes"));
            }
            sink = sink.write_chunk(chunk).await.map_err(io_error)?;
            match next_chunk(stream).await? {
                Some(next) if next.header.is_some() => {
                    return Err(Status::invalid_argument("header: only the first chunk carries one"));
                }
                Some(next) if next.data.is_empty() => {
                    return Err(Status::invalid_argument("data: Required value in every chunk after the first"));
                }
                Some(next) => chunk = next.data,
                None => break,
            }
        }
        if sink.received() != total {
            return Err(Status::invalid_argument(format!(
                "data: the stream ended after {} of {total} bytes",
                sink.received()
            )));
        }
        sink.finish_async().await.map_err(io_error)
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<proto::AppendEntriesRequest>,
    ) -> Result<tonic::Response<proto::AppendEntriesResponse>, Status> {
        let rpc = append_request_from_pb(request.into_inner())?;
        let resp = self.raft.append_entries(rpc).await.map_err(unavailable)?;
        Ok(tonic::Response::new(append_response_to_pb(&resp)))
    }

    async fn vote(&self, request: Request<proto::VoteRequest>) -> Result<tonic::Response<proto::VoteResponse>, Status> {
        let rpc = vote_request_from_pb(request.into_inner())?;
        let resp = self.raft.vote(rpc).await.map_err(unavailable)?;
        Ok(tonic::Response::new(vote_response_to_pb(&resp)))
    }

    async fn pre_vote(
        &self,
        request: Request<proto::VoteRequest>,
    ) -> Result<tonic::Response<proto::VoteResponse>, Status> {
        let rpc = vote_request_from_pb(request.into_inner())?;
        let resp = self.raft.pre_vote(rpc).await.map_err(unavailable)?;
        Ok(tonic::Response::new(vote_response_to_pb(&resp)))
    }

    async fn transfer_leader(
        &self,
        request: Request<proto::TransferLeaderRequest>,
    ) -> Result<tonic::Response<proto::TransferLeaderResponse>, Status> {
        let req = transfer_request_from_pb(request.into_inner())?;
        let resp = self.raft.handle_transfer_leader(req).await.map_err(unavailable)?;
        Ok(tonic::Response::new(transfer_response_to_pb(&resp)))
    }

    async fn install_snapshot(
        &self,
        request: Request<tonic::Streaming<proto::SnapshotChunk>>,
    ) -> Result<tonic::Response<proto::SnapshotResponse>, Status> {
        let _install = self
            .installs
            .try_acquire()
            .map_err(|_| Status::resource_exhausted("a snapshot is being received already; retry later"))?;
        let mut stream = request.into_inner();
        let first =
            next_chunk(&mut stream).await?.ok_or_else(|| Status::invalid_argument("snapshot stream is empty"))?;
        let header =
            first.header.ok_or_else(|| Status::invalid_argument("header: Required value in the first chunk"))?;
        let vote = vote_from_pb(header.vote, "header.vote")?;
        let meta = codec::decode_snapshot_meta(&header.meta)
            .map_err(|e| Status::invalid_argument(format!("header.meta: {e}")))?;
        if header.total_bytes > SNAPSHOT_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "header.totalBytes: Invalid value: {}: must be no more than {SNAPSHOT_BYTES_MAX}",
                header.total_bytes
            )));
        }
        check_snapshot_header(&vote, &meta)?;
        let total = header.total_bytes;
        // The whole stream within the time a sender at the slowest rate it allows itself needs,
        // plus a chunk's wait: a sender trickling bytes does not hold the install slot forever.
        let deadline = transfer_deadline(SNAPSHOT_CHUNK_WAIT, usize::try_from(total).unwrap_or(usize::MAX));
        let received = tokio::time::timeout(deadline, self.receive_snapshot(&meta, total, first.data, &mut stream))
            .await
            .map_err(|_| Status::deadline_exceeded(format!("the snapshot stream took longer than {deadline:?}")))??;
        // Checked before openraft sees it: an install that fails stops the node.
        let data = tokio::task::spawn_blocking(move || received.decode().map(|()| received))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::invalid_argument(format!("data: {e}")))?;
        let resp =
            self.raft.install_full_snapshot(vote, Snapshot { meta, snapshot: data }).await.map_err(unavailable)?;
        Ok(tonic::Response::new(proto::SnapshotResponse { vote: Some(vote_to_pb(&resp.vote)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_the_round_trip_through_protobuf() {
        let vote = VoteOf::<C>::new_committed(7, 3);
        let log_id = LogId::new(LeaderId { term: 7, node_id: 3 }, 42);
        let append = AppendEntriesRequest::<C> {
            vote,
            prev_log_id: Some(log_id),
            entries: vec![openraft::testing::blank_ent::<C>(7, 3, 43)],
            leader_commit: None,
        };
        let back = append_request_from_pb(append_request_to_pb(&append)).expect("decodes");
        assert_eq!(format!("{back:?}"), format!("{append:?}"));
        for resp in [
            AppendEntriesResponse::<C>::Success,
            AppendEntriesResponse::PartialSuccess(Some(log_id)),
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(VoteOf::<C>::new(8, 1)),
        ] {
            assert_eq!(append_response_from_pb(append_response_to_pb(&resp)).expect("decodes"), resp);
        }
        let mut vote_req = VoteRequest::<C>::new(VoteOf::<C>::new(9, 2), Some(log_id));
        vote_req.leadership_transfer = true;
        let back = vote_request_from_pb(vote_request_to_pb(&vote_req)).expect("decodes");
        assert_eq!(back, vote_req);
        let vote_resp = VoteResponse::<C>::new(VoteOf::<C>::new(9, 2), None, true);
        assert_eq!(vote_response_from_pb(vote_response_to_pb(&vote_resp)).expect("decodes"), vote_resp);
        let transfer = TransferLeaderRequest::<C>::new(VoteOf::<C>::new_committed(9, 2), 3, Some(log_id));
        let back = transfer_request_from_pb(transfer_request_to_pb(&transfer)).expect("decodes");
        assert_eq!(back.to_string(), transfer.to_string());
        for resp in [
            Ok(()),
            Err(TransferLeaderError::VoteChanged { expected: VoteOf::<C>::new(1, 1), actual: VoteOf::<C>::new(2, 2) }),
            Err(TransferLeaderError::LogNotFlushed { expected: Some(log_id), actual: None }),
        ] {
            assert_eq!(transfer_response_from_pb(transfer_response_to_pb(&resp)).expect("decodes"), resp);
        }
    }

    #[test]
    fn a_snapshot_header_openraft_would_assert_on_is_refused() {
        let vote = VoteOf::<C>::new_committed(5, 1);
        let id = |term, index| LogId::new(LeaderId { term, node_id: 1 }, index);
        let meta = |last: Option<LogIdOf<C>>, membership: Option<LogIdOf<C>>| openraft::alias::SnapshotMetaOf::<C> {
            last_log_id: last,
            last_membership: openraft::StoredMembership::new(membership, openraft::Membership::default()),
        };
        assert!(check_snapshot_header(&vote, &meta(Some(id(5, 10)), Some(id(4, 3)))).is_ok());
        let err = check_snapshot_header(&vote, &meta(None, None)).expect_err("no last log id");
        assert_eq!(err.message(), "header.meta.lastLogId: Required value");
        let err = check_snapshot_header(&vote, &meta(Some(id(9, 10)), None)).expect_err("beyond the vote");
        assert!(err.message().starts_with("header.meta.lastLogId: Invalid value: "), "{}", err.message());
        let err = check_snapshot_header(&vote, &meta(Some(id(5, 10)), Some(id(5, 11)))).expect_err("membership");
        assert!(err.message().starts_with("header.meta.lastMembership: Invalid value: "), "{}", err.message());
    }

    #[test]
    fn malformed_messages_are_refused_with_the_field_named() {
        let err = append_request_from_pb(proto::AppendEntriesRequest::default()).expect_err("no vote");
        assert_eq!(err.message(), "vote: Required value");
        let bad = proto::AppendEntriesRequest {
            vote: Some(vote_to_pb(&VoteOf::<C>::new(1, 1))),
            entries: vec![vec![9, 9, 9]],
            ..Default::default()
        };
        let err = append_request_from_pb(bad).expect_err("garbage entry");
        assert!(err.message().starts_with("entries[0]: "), "{}", err.message());
    }
}
