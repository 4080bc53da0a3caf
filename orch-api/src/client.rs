//! The client library: typed calls to orch's API with leader discovery and retries.
//!
//! A [`Client`] holds the addresses of the control plane's API servers. Writes and
//! linearizable reads go to the leader: a follower answers UNAVAILABLE with the leader's
//! address, and the client moves there and asks again. An unreachable server, a server that
//! is shutting down or a cluster in the middle of an election is retried on the next address,
//! with back-off, for up to [`ClientOptions::retry_for`]. Retrying a write is safe: each write
//! carries the client's id and a serial, and the state machine applies a (client, serial) pair
//! once and answers retries with the first outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use orch_core::sessions::{Awaiting, SharedSerials};
use orch_core::{Change, ClientId, Kind, Object, ObjectKey, PropagationPolicy, Revision};
use tonic::transport::{Channel, Endpoint};

use crate::convert::{action_from_str, key_from_pb, key_to_pb, object_from_pb, object_to_pb, write_id};
use crate::pb::orch_client::OrchClient;
use crate::pb::{self, Consistency};
use crate::status::Error;
use crate::watch::{Assembler, WatchItem};
use crate::{REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX};

/// The longest pause between attempts of a call while no server names a leader (an election):
/// short, so that a write goes through soon after a new leader is elected (the failover bench
/// measures ~1.3 s to a new leader; a pause of up to a second would add up to that).
pub const CALL_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// The most addresses a client keeps (the given ones plus leaders it was pointed at).
pub const CLIENT_ENDPOINTS_MAX: usize = 64;

/// How a [`Client`] connects and retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long connecting to one server may take.
    pub connect_timeout: Duration,
    /// How long one attempt of a call may take (for a watch: until the stream is open).
    pub request_timeout: Duration,
    /// How long a call keeps retrying while no server can serve it (an election, a restart);
    /// for a watch, how long it keeps resuming without delivering anything.
    pub retry_for: Duration,
    /// How often an HTTP/2 ping checks the connection, so that a server that vanished
    /// (a watch with nothing to say would otherwise wait forever) is noticed.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped and its calls fail
    /// (a watch then resumes on another server).
    pub keepalive_timeout: Duration,
    /// Whether a call keeps retrying (for `retry_for`) when every address refuses the
    /// connection. Off by default, as kubectl: nothing listening at any address is a wrong
    /// address or a control plane that is down, answered at once with [`Error::Refused`]. A
    /// program that starts before its servers, or must outlive their restart, turns it on.
    /// (While any server answers, an election say, calls wait either way.)
    pub wait_while_refused: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(15),
            retry_for: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            wait_while_refused: false,
        }
    }
}

/// The result of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    /// The revision of the entry that applied it.
    pub revision: u64,
    /// The change to each object, in order.
    pub changes: Vec<Change>,
}

/// A watch: events in revision order; it resumes on another server after a failure.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchItem, Error>> + Send>>;

/// A member of the control plane, as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its node id.
    pub id: u64,
    /// Its Raft transport's address.
    pub raft_address: String,
    /// Its API address.
    pub api_address: String,
    /// Whether it votes (a learner does not yet).
    pub voter: bool,
}

/// The members and the leader (0 when unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembersInfo {
    /// The members by id.
    pub members: Vec<MemberInfo>,
    /// The leader's id, or 0.
    pub leader: u64,
}

struct Endpoints {
    /// Addresses to try, in order; `current` is the one in use.
    addrs: Vec<String>,
    current: usize,
    channels: BTreeMap<String, Channel>,
}

/// A connection a [`Connector`] made: any byte stream.
pub trait Connection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Connection for T {}

/// What [`Connector`] returns: a connection to the address, or why there is none (an
/// [`std::io::ErrorKind::ConnectionRefused`] counts as refused, as from TCP).
pub type Connecting = Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Connection>>> + Send>>;

/// Makes a client's connections to `host:port` addresses in place of TCP: an in-process
/// transport (orch-sim serves the API over in-memory streams this way). The same client logic
/// (leader discovery, retries, sessions, watch resumption) runs over it.
pub type Connector = Arc<dyn Fn(&str) -> Connecting + Send + Sync>;

struct Inner {
    endpoints: Mutex<Endpoints>,
    client: ClientId,
    connector: Option<Connector>,
    /// The serials of writes awaiting replies: each write carries the lowest as `acked_below`.
    serials: SharedSerials,
    options: ClientOptions,
}

/// A handle on the API of a control plane. Clones share connections, the client id and the
/// serial counter.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A random number from the standard library's per-process random keys (no clock, no extra
/// dependency); enough to tell clients apart, not a secret.
fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}

impl Client {
    /// A client of the servers at `addrs` (`host:port`, or `http://host:port`), with default
    /// options. Connections are made on first use.
    ///
    /// # Errors
    /// [`Error::Invalid`] when no address is given or one is malformed.
    pub fn new<S: Into<String>>(addrs: impl IntoIterator<Item = S>) -> Result<Self, Error> {
        Self::with_options(addrs, ClientOptions::default())
    }

    /// A client with chosen timeouts.
    ///
    /// # Errors
    /// [`Error::Invalid`] when no address is given or one is malformed.
    pub fn with_options<S: Into<String>>(
        addrs: impl IntoIterator<Item = S>,
        options: ClientOptions,
    ) -> Result<Self, Error> {
        Self::builder(addrs).options(options).build()
    }

    /// A client with more choices than [`Client::with_options`]: its id, its connector.
    pub fn builder<S: Into<String>>(addrs: impl IntoIterator<Item = S>) -> ClientBuilder {
        ClientBuilder {
            addrs: addrs.into_iter().map(Into::into).collect(),
            options: ClientOptions::default(),
            id: None,
            connector: None,
        }
    }
}

/// Builds a [`Client`]: [`Client::builder`].
pub struct ClientBuilder {
    addrs: Vec<String>,
    options: ClientOptions,
    id: Option<ClientId>,
    connector: Option<Connector>,
}

impl ClientBuilder {
    /// Its timeouts and retries.
    #[must_use]
    pub fn options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    /// Its client id (default: random). Two clients with one id share a session: give each
    /// its own (a simulation derives them from its seed).
    #[must_use]
    pub fn id(mut self, id: ClientId) -> Self {
        self.id = Some(id);
        self
    }

    /// Makes its connections with `connector` instead of TCP.
    #[must_use]
    pub fn connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }

    /// The client.
    ///
    /// # Errors
    /// [`Error::Invalid`] when no address is given, one is malformed, or the id is 0.
    pub fn build(self) -> Result<Client, Error> {
        let Self { addrs, options, id, connector } = self;
        let mut list = Vec::new();
        for addr in addrs {
            let addr = normalize(&addr)?;
            if !list.contains(&addr) {
                list.push(addr);
            }
        }
        if list.is_empty() {
            return Err(Error::Invalid("servers: Required value: give at least one address".to_owned()));
        }
        if list.len() > CLIENT_ENDPOINTS_MAX {
            return Err(Error::Invalid(format!(
                "servers: Too many: {}: must have at most {CLIENT_ENDPOINTS_MAX} items",
                list.len()
            )));
        }
        if id == Some(ClientId(0)) {
            return Err(Error::Invalid("id: Invalid value: 0: must not be 0".to_owned()));
        }
        let client = id.unwrap_or_else(|| ClientId((u128::from(random_u64()) << 64) | u128::from(random_u64() | 1)));
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints: Mutex::new(Endpoints { addrs: list, current: 0, channels: BTreeMap::new() }),
                client,
                connector,
                serials: SharedSerials::default(),
                options,
            }),
        })
    }
}

impl Client {
    /// This client's id (writes carry it with their serial).
    pub fn id(&self) -> ClientId {
        self.inner.client
    }

    /// The address calls go to now.
    pub fn current_server(&self) -> String {
        let e = lock(&self.inner.endpoints);
        e.addrs[e.current].clone()
    }

    fn connect(&self) -> Result<(String, OrchClient<Channel>), Error> {
        let mut e = lock(&self.inner.endpoints);
        let addr = e.addrs[e.current].clone();
        let channel = match e.channels.get(&addr) {
            Some(c) => c.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|err| Error::Invalid(format!("servers: Invalid value: {addr:?}: {err}")))?
                    .connect_timeout(self.inner.options.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(self.inner.options.keepalive_interval)
                    .keep_alive_timeout(self.inner.options.keepalive_timeout)
                    .keep_alive_while_idle(true);
                let channel = match &self.inner.connector {
                    None => endpoint.connect_lazy(),
                    Some(connector) => {
                        let connector = Arc::clone(connector);
                        let to = addr.clone();
                        endpoint.connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
                            let connecting = connector(&to);
                            async move { connecting.await.map(hyper_util::rt::TokioIo::new) }
                        }))
                    }
                };
                e.channels.insert(addr.clone(), channel.clone());
                channel
            }
        };
        let client = OrchClient::new(channel)
            .max_decoding_message_size(RESPONSE_BYTES_MAX)
            .max_encoding_message_size(REQUEST_BYTES_MAX);
        Ok((addr, client))
    }

    /// After `failed` could not serve: go to the leader it named, or to the next address.
    fn move_on(&self, failed: &str, leader: Option<&str>) {
        let mut e = lock(&self.inner.endpoints);
        if e.addrs[e.current] != failed {
            return; // another call moved already
        }
        if let Some(leader) = leader.and_then(|l| normalize(l).ok()) {
            if let Some(i) = e.addrs.iter().position(|a| *a == leader) {
                e.current = i;
                return;
            }
            if e.addrs.len() < CLIENT_ENDPOINTS_MAX {
                e.addrs.push(leader);
                e.current = e.addrs.len() - 1;
                return;
            }
        }
        e.current = (e.current + 1) % e.addrs.len();
        // A broken connection is made again on the next use.
        e.channels.remove(failed);
    }

    /// Runs one call, retrying on other servers while the answer is "not here, not now".
    async fn call<T, F, Fut>(&self, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(OrchClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_attempts(|client, _| attempt(client)).await
    }

    /// Runs one write: [`Client::call`] with `request`, whose write id says on each attempt
    /// whether an earlier one may have reached a server (`retry`), so that a server that no
    /// longer knows this client answers "outcome unknown" rather than apply it a second time.
    async fn write<R, F, Fut>(&self, request: R, send: F) -> Result<WriteResult, Error>
    where
        R: Write,
        F: Fn(OrchClient<Channel>, R) -> Fut,
        Fut: Future<Output = Result<tonic::Response<pb::WriteResponse>, tonic::Status>>,
    {
        let response = self
            .call_attempts(|client, retry| {
                let mut r = request.clone();
                if let Some(id) = r.id_mut() {
                    id.retry = retry;
                }
                send(client, r)
            })
            .await?;
        write_result(response)
    }

    /// [`Client::call`], telling each attempt whether an earlier one may have reached a server.
    async fn call_attempts<T, F, Fut>(&self, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(OrchClient<Channel>, bool) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.options.retry_for;
        let mut backoff = Duration::from_millis(20);
        // The addresses that refused a connection.
        let mut refused: BTreeSet<String> = BTreeSet::new();
        // An attempt that reached, or may have reached, a server (an answer, a timeout, a broken
        // connection): then the call's outcome is not "refused", whatever later attempts meet.
        let mut reached = false;
        // An attempt that may have been proposed (reached a server that did not say it proposed
        // nothing): every later attempt is a retry.
        let mut maybe_proposed = false;
        // Whether a server named a leader to go to.
        let mut redirected = false;
        loop {
            let (addr, client) = self.connect()?;
            let result =
                tokio::time::timeout(self.inner.options.request_timeout, attempt(client, maybe_proposed)).await;
            let error = match result {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if connection_refused(&status) => {
                    refused.insert(addr.clone());
                    let addrs = lock(&self.inner.endpoints).addrs.clone();
                    if !self.inner.options.wait_while_refused && !reached && addrs.iter().all(|a| refused.contains(a)) {
                        return Err(Error::Refused(format!(
                            "The connection to the server {} was refused - did you specify the right host or port?",
                            addrs.join(", ")
                        )));
                    }
                    Error::from(status)
                }
                Ok(Err(status)) => {
                    // A server was reached: whatever it did with the call, it is not "refused",
                    // and a write may have been proposed unless the server says it was not.
                    reached = true;
                    maybe_proposed |= !crate::status::not_proposed(&status);
                    Error::from(status)
                }
                Err(_) => {
                    reached = true;
                    maybe_proposed = true;
                    Error::Timeout(format!("{addr} did not answer within {:?}", self.inner.options.request_timeout))
                }
            };
            let hinted = match &error {
                Error::Unavailable { leader, .. } => {
                    leader.clone().filter(|l| normalize(l).ok().as_deref() != Some(&addr))
                }
                Error::Timeout(_) => None,
                e if transport_failure(e) => None,
                _ => return Err(error),
            };
            self.move_on(&addr, hinted.as_deref());
            if tokio::time::Instant::now() >= deadline {
                return Err(error);
            }
            // Nobody named a leader (an election, a restart, or every server is down), or this
            // call was redirected already: two servers that name each other as the leader
            // (views that disagree for a moment, around a leadership transfer) must not send
            // the call back and forth without a pause. The first redirect goes at once.
            if hinted.is_none() || redirected {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(CALL_BACKOFF_MAX);
            }
            redirected |= hinted.is_some();
        }
    }

    /// A write id of a fresh serial, awaiting its reply until the returned guard drops (at the
    /// end of the call, or when the call's future is dropped): the server keeps the outcome of
    /// every serial from the lowest awaiting on, so concurrent writes from clones of this
    /// client may reach the log in any order.
    async fn next_id(&self) -> (pb::WriteId, Awaiting) {
        let awaiting = self.inner.serials.begin(1).await;
        (write_id(self.inner.client, awaiting.serials().start, awaiting.acked_below()), awaiting)
    }

    /// Creates an object.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::Invalid`] (naming the field), [`Error::NotFound`] (no
    /// such namespace), or the cluster is unavailable.
    pub async fn create(&self, object: &Object) -> Result<WriteResult, Error> {
        self.send_create(Some(object_to_pb(object)), Vec::new()).await
    }

    /// One `Create` call: `object`, or `objects` in one atomic entry.
    async fn send_create(&self, object: Option<pb::Object>, objects: Vec<pb::Object>) -> Result<WriteResult, Error> {
        let (id, _awaiting) = self.next_id().await;
        let request = sized(pb::CreateRequest { id: Some(id), object, objects })?;
        self.write(request, |mut c, r| async move { c.create(r).await }).await
    }

    /// Replaces an object's spec and metadata; with `metadata.resourceVersion` set, only if it
    /// is still at that revision ([`Error::Conflict`] otherwise).
    ///
    /// # Errors
    /// As [`Client::create`], and [`Error::Conflict`].
    pub async fn update(&self, object: &Object) -> Result<WriteResult, Error> {
        let (id, _awaiting) = self.next_id().await;
        let request = sized(pb::UpdateRequest { id: Some(id), object: Some(object_to_pb(object)) })?;
        self.write(request, |mut c, r| async move { c.update(r).await }).await
    }

    /// Replaces an object's status.
    ///
    /// # Errors
    /// As [`Client::update`].
    pub async fn update_status(&self, object: &Object) -> Result<WriteResult, Error> {
        let (id, _awaiting) = self.next_id().await;
        let request = sized(pb::UpdateRequest { id: Some(id), object: Some(object_to_pb(object)) })?;
        self.write(request, |mut c, r| async move { c.update_status(r).await }).await
    }

    /// Deletes an object; `grace_period_seconds` overrides a pod's grace period (0: at once).
    ///
    /// # Errors
    /// [`Error::NotFound`], or the cluster is unavailable.
    pub async fn delete(&self, key: &ObjectKey, grace_period_seconds: Option<i64>) -> Result<WriteResult, Error> {
        self.delete_with(key, grace_period_seconds, None).await
    }

    /// Deletes an object with a `propagationPolicy` for its dependents (`kubectl delete
    /// --cascade`): [`PropagationPolicy::Orphan`] keeps them, [`PropagationPolicy::Foreground`]
    /// keeps the object, marked, until they are gone; `None` is [`Client::delete`].
    ///
    /// # Errors
    /// As [`Client::delete`].
    pub async fn delete_with(
        &self,
        key: &ObjectKey,
        grace_period_seconds: Option<i64>,
        propagation_policy: Option<PropagationPolicy>,
    ) -> Result<WriteResult, Error> {
        self.delete_request(key, grace_period_seconds, propagation_policy.map(|p| p.as_str().to_owned()), None).await
    }

    /// Deletes the object at `key` only if its uid is `uid` (Kubernetes'
    /// `preconditions.uid`), with a grace period as [`Client::delete`]: how a node agent deletes
    /// for good a pod it stopped.
    ///
    /// # Errors
    /// As [`Client::delete`]; [`Error::Conflict`] when the object there has another uid.
    pub async fn delete_uid(
        &self,
        key: &ObjectKey,
        uid: orch_core::ids::Uid,
        grace_period_seconds: Option<i64>,
    ) -> Result<WriteResult, Error> {
        self.delete_request(key, grace_period_seconds, None, Some(uid.to_string())).await
    }

    async fn delete_request(
        &self,
        key: &ObjectKey,
        grace_period_seconds: Option<i64>,
        propagation_policy: Option<String>,
        uid: Option<String>,
    ) -> Result<WriteResult, Error> {
        let (id, _awaiting) = self.next_id().await;
        let request = pb::DeleteRequest {
            id: Some(id),
            key: Some(key_to_pb(key)),
            grace_period_seconds,
            resource_version: None,
            propagation_policy,
            uid,
        };
        self.write(request, |mut c, r| async move { c.delete(r).await }).await
    }

    /// Creates each object, in one atomic write: all of them or none (what `orchctl create -f`
    /// sends).
    ///
    /// # Errors
    /// The first refused object's error (the message names it, as `[i]`); nothing is written.
    pub async fn create_all(&self, objects: &[Object]) -> Result<WriteResult, Error> {
        self.send_create(None, objects.iter().map(object_to_pb).collect()).await
    }

    /// Creates or updates each object, in one atomic write: all of them or none. An object
    /// that exists is merged with kubectl's three-way merge: what the manifest applied last
    /// named and this one does not is removed, what others set is kept. Each object is sent
    /// as its manifest, where a field at its default (an empty list too) is absent; use
    /// [`Client::apply_manifests`] to send manifests as written.
    ///
    /// # Errors
    /// The first object's error (the message names it); nothing is written.
    pub async fn apply(&self, objects: &[Object]) -> Result<WriteResult, Error> {
        let manifests: Vec<serde_json::Value> = objects.iter().map(Object::to_manifest).collect();
        self.apply_manifests(&manifests).await
    }

    /// As [`Client::apply`], for manifests as written (what `orchctl apply` sends): an empty
    /// list in one clears the live object's, an absent one leaves it.
    ///
    /// # Errors
    /// The first manifest's error (the message names it); nothing is written.
    pub async fn apply_manifests(&self, manifests: &[serde_json::Value]) -> Result<WriteResult, Error> {
        let (id, _awaiting) = self.next_id().await;
        let objects = manifests
            .iter()
            // Serializing a JSON value into memory cannot fail.
            .map(|m| pb::Object { json: serde_json::to_vec(m).unwrap_or_default().into() })
            .collect();
        let request = sized(pb::ApplyRequest { id: Some(id), objects })?;
        self.write(request, |mut c, r| async move { c.apply(r).await }).await
    }

    /// Binds a pod to a node.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Conflict`] when it is bound already.
    pub async fn bind(&self, namespace: &str, name: &str, node: &str) -> Result<WriteResult, Error> {
        let (id, _awaiting) = self.next_id().await;
        let request = pb::BindRequest {
            id: Some(id),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            node: node.to_owned(),
        };
        self.write(request, |mut c, r| async move { c.bind(r).await }).await
    }

    /// Sets the replicas of a Deployment or ReplicaSet.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Invalid`] for a negative count or a kind without replicas.
    pub async fn scale(&self, key: &ObjectKey, replicas: i32) -> Result<WriteResult, Error> {
        let (id, _awaiting) = self.next_id().await;
        let request = pb::ScaleRequest { id: Some(id), key: Some(key_to_pb(key)), replicas };
        self.write(request, |mut c, r| async move { c.scale(r).await }).await
    }

    /// Reads one object (linearizable), with the revision of the state it was read from
    /// (watch from it to follow the object).
    ///
    /// # Errors
    /// [`Error::NotFound`], or the cluster is unavailable.
    pub async fn get(&self, key: &ObjectKey) -> Result<(Object, u64), Error> {
        let request = pb::GetRequest { key: Some(key_to_pb(key)), consistency: Consistency::Linearizable.into() };
        let response = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.get(r).await }
            })
            .await?;
        let object = object_from_pb(response.object.as_ref(), "object").map_err(broken)?;
        Ok((object, response.revision))
    }

    /// Lists the objects of `kind` in `namespace` (all namespaces for `None`) whose labels
    /// match `label_selector` (empty: all) and, for pods, bound to `node_name`; with the
    /// revision of the state listed (watch from it to follow the list).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed selector; [`Error::ResourceExhausted`] for a list
    /// over [`crate::LIST_OBJECTS_MAX`].
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        label_selector: &str,
        node_name: Option<&str>,
    ) -> Result<(Vec<Object>, u64), Error> {
        self.list_request(pb::ListRequest {
            kind: kind.as_str().to_owned(),
            namespace: namespace.unwrap_or_default().to_owned(),
            label_selector: label_selector.to_owned(),
            node_name: node_name.unwrap_or_default().to_owned(),
            consistency: Consistency::Linearizable.into(),
            field_selector: String::new(),
        })
        .await
    }

    /// Lists as [`Client::list`], selecting also by fields: `field_selector` as Kubernetes'
    /// `fieldSelector` (`involvedObject.name=web-0,type!=Normal`; the fields are listed in
    /// [`orch_core::fields`]).
    ///
    /// # Errors
    /// As [`Client::list`]; [`Error::Invalid`] also for a field the kind does not support.
    pub async fn list_fields(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        label_selector: &str,
        field_selector: &str,
    ) -> Result<(Vec<Object>, u64), Error> {
        self.list_request(pb::ListRequest {
            kind: kind.as_str().to_owned(),
            namespace: namespace.unwrap_or_default().to_owned(),
            label_selector: label_selector.to_owned(),
            node_name: String::new(),
            consistency: Consistency::Linearizable.into(),
            field_selector: field_selector.to_owned(),
        })
        .await
    }

    async fn list_request(&self, request: pb::ListRequest) -> Result<(Vec<Object>, u64), Error> {
        let response = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.list(r).await }
            })
            .await?;
        let objects = response
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| object_from_pb(Some(o), &format!("objects[{i}]")).map_err(broken))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((objects, response.revision))
    }

    /// The revisions of a Deployment, oldest first.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such Deployment.
    pub async fn rollout_history(&self, namespace: &str, name: &str) -> Result<Vec<pb::RolloutRevision>, Error> {
        let request = pb::RolloutHistoryRequest { namespace: namespace.to_owned(), name: name.to_owned() };
        let response = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.rollout_history(r).await }
            })
            .await?;
        Ok(response.revisions)
    }

    /// Rolls a Deployment back to revision `to_revision` (0: the one before the current).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown Deployment or revision.
    pub async fn rollout_undo(&self, namespace: &str, name: &str, to_revision: i64) -> Result<WriteResult, Error> {
        let (id, _awaiting) = self.next_id().await;
        let request = pb::RolloutUndoRequest {
            id: Some(id),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            to_revision,
        };
        self.write(request, |mut c, r| async move { c.rollout_undo(r).await }).await
    }

    /// Tells the leader that node `node`'s agent is alive (a heartbeat; nothing is written
    /// unless the node's readiness changes).
    ///
    /// # Errors
    /// [`Error::NotFound`] when no such node is registered; [`Error::Invalid`] for a name
    /// that is not one.
    pub async fn heartbeat(&self, node: &str) -> Result<(), Error> {
        let request = pb::HeartbeatRequest { node: node.to_owned() };
        self.call(|mut c| {
            let r = request.clone();
            async move { c.heartbeat(r).await }
        })
        .await?;
        Ok(())
    }

    /// The control plane's members and its leader.
    ///
    /// # Errors
    /// When no server answers.
    pub async fn members(&self) -> Result<MembersInfo, Error> {
        let response = self.call(|mut c| async move { c.members(pb::MembersRequest {}).await }).await?;
        Ok(members_info(response))
    }

    /// Adds a member: it catches up as a learner, then votes.
    ///
    /// # Errors
    /// When the change fails or no leader answers.
    pub async fn add_member(&self, id: u64, raft_address: &str, api_address: &str) -> Result<MembersInfo, Error> {
        let request =
            pb::AddMemberRequest { id, raft_address: raft_address.to_owned(), api_address: api_address.to_owned() };
        let response = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.add_member(r).await }
            })
            .await?;
        Ok(members_info(response))
    }

    /// Removes a member.
    ///
    /// # Errors
    /// When the change fails or no leader answers.
    pub async fn remove_member(&self, id: u64) -> Result<MembersInfo, Error> {
        let response = self.call(|mut c| async move { c.remove_member(pb::RemoveMemberRequest { id }).await }).await?;
        Ok(members_info(response))
    }

    /// The status of the server calls go to now (any server answers; no retry to the leader).
    ///
    /// # Errors
    /// When no server answers.
    pub async fn status(&self) -> Result<pb::StatusResponse, Error> {
        self.call(|mut c| async move { c.status(pb::StatusRequest {}).await }).await
    }

    /// A snapshot of the whole state: its revision and its bytes (`orch_core::State`'s
    /// snapshot format, with a digest).
    ///
    /// # Errors
    /// When no leader answers or the stream breaks.
    pub async fn snapshot(&self) -> Result<(u64, Vec<u8>), Error> {
        let mut stream = self.call(|mut c| async move { c.snapshot(pb::SnapshotRequest {}).await }).await?;
        let mut revision = 0;
        let mut data = Vec::new();
        let mut total = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Error::from)?;
            if total.is_none() {
                revision = chunk.revision;
                total = Some(usize::try_from(chunk.total_bytes).map_err(|_| broken_msg("snapshot size"))?);
                data.reserve(total.unwrap_or_default().min(RESPONSE_BYTES_MAX));
            }
            data.extend_from_slice(&chunk.data);
            if total.is_some_and(|t| data.len() > t) {
                return Err(broken_msg("the snapshot stream exceeds its announced size"));
            }
        }
        if total != Some(data.len()) {
            return Err(broken_msg("the snapshot stream ended early"));
        }
        Ok((revision, data))
    }

    /// Watches the committed events after `from_revision` (0: from now) that match the
    /// filter (empty strings do not filter), a revision at a time: each
    /// [`WatchItem::Events`] holds all the matching events of one revision. After the backlog
    /// (the kept events after `from_revision`) comes progress, so for a watch from now the
    /// first item is progress naming the revision it starts at; then progress comes at least
    /// every progress interval of the server (1 s by default).
    ///
    /// When the stream breaks (the server died, stopped answering pings, shut down, or is at
    /// its limit of watches) the watch resumes on another server after the last revision it
    /// delivered, so no event is lost or repeated; it gives up after
    /// [`ClientOptions::retry_for`] without delivering anything. A watch from now that breaks
    /// before its first item starts afresh from now on the next server: it had delivered
    /// nothing, so nothing is skipped from what it reported. It ends with [`Error::Expired`]
    /// when its revision is no longer kept (list again, then watch from the list's revision).
    pub fn watch(
        &self,
        from_revision: u64,
        kind: &str,
        namespace: &str,
        label_selector: &str,
        node_name: &str,
    ) -> WatchStream {
        self.watch_request(pb::WatchRequest {
            from_revision,
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            label_selector: label_selector.to_owned(),
            node_name: node_name.to_owned(),
            field_selector: String::new(),
        })
    }

    /// Watches as [`Client::watch`], selecting also by fields as [`Client::list_fields`].
    pub fn watch_fields(
        &self,
        from_revision: u64,
        kind: &str,
        namespace: &str,
        label_selector: &str,
        field_selector: &str,
    ) -> WatchStream {
        self.watch_request(pb::WatchRequest {
            from_revision,
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            label_selector: label_selector.to_owned(),
            node_name: String::new(),
            field_selector: field_selector.to_owned(),
        })
    }

    fn watch_request(&self, request: pb::WatchRequest) -> WatchStream {
        let from_revision = request.from_revision;
        let state = WatchState {
            client: self.clone(),
            request,
            stream: None,
            assembler: Assembler::new(from_revision),
            failing_since: None,
            backoff: WATCH_BACKOFF_MIN,
            done: false,
        };
        Box::pin(futures_util::stream::unfold(state, WatchState::next))
    }
}

/// A write request: it carries a write id.
trait Write: Clone {
    fn id_mut(&mut self) -> Option<&mut pb::WriteId>;
}

macro_rules! writes {
    ($($t:ty),*) => {$(
        impl Write for $t {
            fn id_mut(&mut self) -> Option<&mut pb::WriteId> {
                self.id.as_mut()
            }
        }
    )*};
}
writes!(
    pb::CreateRequest,
    pb::UpdateRequest,
    pb::DeleteRequest,
    pb::ApplyRequest,
    pb::BindRequest,
    pb::ScaleRequest,
    pb::RolloutUndoRequest
);

/// The first pause before a watch resumes after a failure; it doubles up to a second.
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(20);

struct WatchState {
    client: Client,
    request: pb::WatchRequest,
    stream: Option<tonic::Streaming<pb::WatchResponse>>,
    assembler: Assembler,
    /// Since when the watch has been failing without delivering anything.
    failing_since: Option<tokio::time::Instant>,
    backoff: Duration,
    done: bool,
}

/// Whether a watch that failed with `e` may resume on another server.
fn resumable(e: &Error) -> bool {
    // A watch resumes while nothing listens too (a restarting server), for up to `retry_for`.
    matches!(e, Error::Unavailable { .. } | Error::Timeout(_) | Error::ResourceExhausted(_) | Error::Refused(_))
        || transport_failure(e)
}

impl WatchState {
    fn end(mut self, e: Error) -> Option<(Result<WatchItem, Error>, Self)> {
        self.done = true;
        Some((Err(e), self))
    }

    /// After a failure: drop the stream (and any revision still in fragments), move to the
    /// next server, and wait a little; false once the watch has failed for too long.
    async fn resume(&mut self) -> bool {
        self.assembler.broken();
        self.stream = None;
        let addr = self.client.current_server();
        self.client.move_on(&addr, None);
        let now = tokio::time::Instant::now();
        let since = *self.failing_since.get_or_insert(now);
        if now.duration_since(since) >= self.client.inner.options.retry_for {
            return false;
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
        true
    }

    async fn next(mut self) -> Option<(Result<WatchItem, Error>, Self)> {
        if self.done {
            return None;
        }
        loop {
            let stream = match &mut self.stream {
                Some(s) => s,
                None => {
                    self.request.from_revision = self.assembler.resume_from();
                    let request = self.request.clone();
                    let opened = self
                        .client
                        .call(|mut c| {
                            let r = request.clone();
                            async move { c.watch(r).await }
                        })
                        .await;
                    match opened {
                        Ok(s) => self.stream.insert(s),
                        Err(e) if resumable(&e) => {
                            if !self.resume().await {
                                return self.end(e);
                            }
                            continue;
                        }
                        Err(e) => return self.end(e),
                    }
                }
            };
            let failure = match stream.next().await {
                Some(Ok(response)) => match self.assembler.push(response) {
                    Ok(Some(item)) => {
                        self.failing_since = None;
                        self.backoff = WATCH_BACKOFF_MIN;
                        return Some((Ok(item), self));
                    }
                    Ok(None) => continue,
                    Err(e) => return self.end(e),
                },
                Some(Err(status)) => {
                    let e = Error::from(status);
                    if !resumable(&e) {
                        return self.end(e);
                    }
                    e
                }
                // The server ended the stream (it is shutting down): resume elsewhere.
                None => Error::unavailable("the server ended the watch stream"),
            };
            if !self.resume().await {
                return self.end(failure);
            }
        }
    }
}

fn members_info(response: pb::MembersResponse) -> MembersInfo {
    MembersInfo {
        members: response
            .members
            .into_iter()
            .map(|m| MemberInfo { id: m.id, raft_address: m.raft_address, api_address: m.api_address, voter: m.voter })
            .collect(),
        leader: response.leader,
    }
}

fn write_result(response: pb::WriteResponse) -> Result<WriteResult, Error> {
    let changes = response
        .changes
        .iter()
        .enumerate()
        .map(|(i, c)| change_from_pb(c).map_err(|e| broken_msg(&format!("changes[{i}]: {e}"))))
        .collect::<Result<_, _>>()?;
    Ok(WriteResult { revision: response.revision, changes })
}

fn change_from_pb(c: &pb::Change) -> Result<Change, Error> {
    let key = key_from_pb(c.key.as_ref(), "key")?;
    let uid = c.uid.parse().map_err(|_| Error::Invalid(format!("uid: Invalid value: {:?}", c.uid)))?;
    let action = action_from_str(&c.action)
        .ok_or_else(|| Error::Invalid(format!("action: Unsupported value: {:?}", c.action)))?;
    Ok(Change { key, uid, revision: Revision(c.revision), action })
}

/// Refuses a request over [`REQUEST_BYTES_MAX`] before sending it, with the sizes named.
fn sized<T: prost::Message>(request: T) -> Result<T, Error> {
    let len = request.encoded_len();
    if len > REQUEST_BYTES_MAX {
        return Err(Error::ResourceExhausted(format!(
            "the request is {len} bytes, larger than the server accepts ({REQUEST_BYTES_MAX} bytes at most)"
        )));
    }
    Ok(request)
}

/// Whether `status` is a failure to connect because nothing listens at the address (the
/// operating system's "connection refused", somewhere in the status's chain of sources).
fn connection_refused(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// An error from the connection rather than the server (the server died mid-call, a reset):
/// worth retrying elsewhere.
fn transport_failure(e: &Error) -> bool {
    match e {
        Error::Internal(m) => {
            ["h2 protocol error", "transport error", "connection", "broken pipe"].iter().any(|s| m.contains(s))
        }
        _ => false,
    }
}

/// A response the client cannot read: the server is broken or of another version.
fn broken(e: Error) -> Error {
    broken_msg(e.message())
}

fn broken_msg(what: &str) -> Error {
    Error::Internal(format!("malformed response from the server: {what}"))
}

/// `host:port` from `host:port` or `http://host:port/`.
fn normalize(addr: &str) -> Result<String, Error> {
    let trimmed = addr.trim().trim_start_matches("http://").trim_end_matches('/');
    if trimmed.is_empty() || trimmed.contains('/') || !trimmed.contains(':') {
        return Err(Error::Invalid(format!("servers: Invalid value: {addr:?}: must be host:port")));
    }
    Ok(trimmed.to_owned())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalized_and_checked() {
        assert_eq!(normalize("http://127.0.0.1:7100/").expect("valid"), "127.0.0.1:7100");
        assert!(normalize("localhost").is_err());
        assert!(normalize("").is_err());
        assert!(Client::new(Vec::<String>::new()).is_err());
        let c = Client::new(["127.0.0.1:1", "http://127.0.0.1:1"]).expect("valid");
        assert_eq!(c.current_server(), "127.0.0.1:1");
    }

    #[test]
    fn a_client_moves_to_the_named_leader_then_round_robin() {
        let c = Client::new(["127.0.0.1:1", "127.0.0.1:2"]).expect("valid");
        c.move_on("127.0.0.1:1", Some("127.0.0.1:3"));
        assert_eq!(c.current_server(), "127.0.0.1:3");
        c.move_on("127.0.0.1:3", None);
        assert_eq!(c.current_server(), "127.0.0.1:1");
        c.move_on("127.0.0.1:1", Some("127.0.0.1:2"));
        assert_eq!(c.current_server(), "127.0.0.1:2");
        // A stale failure report (another call moved already) changes nothing.
        c.move_on("127.0.0.1:1", None);
        assert_eq!(c.current_server(), "127.0.0.1:2");
    }

    #[test]
    fn clients_get_distinct_nonzero_ids() {
        let a = Client::new(["127.0.0.1:1"]).expect("valid");
        let b = Client::new(["127.0.0.1:1"]).expect("valid");
        assert_ne!(a.id(), b.id());
        assert_ne!(a.id().0, 0);
    }

    /// Two loopback addresses where nothing listens (bound, then closed).
    fn closed_ports() -> Vec<String> {
        let listeners: Vec<std::net::TcpListener> =
            (0..2).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("binds")).collect();
        listeners.iter().map(|l| l.local_addr().expect("address").to_string()).collect()
    }

    #[tokio::test]
    async fn every_address_refusing_fails_at_once_as_kubectl_does() {
        let addrs = closed_ports();
        let c = Client::new(addrs.clone()).expect("valid");
        let err = c.get(&ObjectKey::new(Kind::Namespace, "", "default")).await.expect_err("nothing listens");
        let Error::Refused(message) = &err else { panic!("{err:?}") };
        assert_eq!(
            message,
            &format!(
                "The connection to the server {}, {} was refused - did you specify the right host or port?",
                addrs[0], addrs[1]
            )
        );
        // Asked to, it keeps trying for `retry_for`, then reports the last failure.
        let options = ClientOptions {
            wait_while_refused: true,
            retry_for: Duration::from_millis(200),
            ..ClientOptions::default()
        };
        let c = Client::with_options(addrs, options).expect("valid");
        let err = c.get(&ObjectKey::new(Kind::Namespace, "", "default")).await.expect_err("nothing listens");
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    }

    /// A call one of whose attempts may have reached a server (here one that accepts the
    /// connection and never answers, until it goes) is not "refused" when every address refuses
    /// later: it keeps trying for `retry_for` and reports the last failure. Paused time: the
    /// timeouts run on the test's clock.
    #[tokio::test(start_paused = true)]
    async fn a_call_that_may_have_reached_a_server_is_never_refused() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let addrs = vec![silent.local_addr().expect("address").to_string(), closed_ports().remove(0)];
        let options = ClientOptions {
            request_timeout: Duration::from_secs(1),
            retry_for: Duration::from_secs(10),
            ..ClientOptions::default()
        };
        // The silent server goes after the first attempt timed out: then both addresses refuse.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            drop(silent);
        });
        let c = Client::with_options(addrs, options).expect("valid");
        let start = tokio::time::Instant::now();
        let err = c.get(&ObjectKey::new(Kind::Namespace, "", "default")).await.expect_err("nobody answers");
        assert!(!matches!(err, Error::Refused(_)), "{err:?}");
        assert!(start.elapsed() >= Duration::from_secs(10), "tried for retry_for: {:?}", start.elapsed());
    }

    /// A watch resumes through refusals (a restarting server) for `retry_for` before it gives
    /// up, where a call fails at once.
    #[tokio::test(start_paused = true)]
    async fn a_watch_resumes_through_refusals_for_retry_for() {
        use futures_util::StreamExt;
        let options = ClientOptions { retry_for: Duration::from_secs(5), ..ClientOptions::default() };
        let c = Client::with_options(closed_ports(), options).expect("valid");
        let start = tokio::time::Instant::now();
        let err = c.get(&ObjectKey::new(Kind::Namespace, "", "default")).await.expect_err("nothing listens");
        assert!(matches!(err, Error::Refused(_)), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(1), "a call: at once");
        let mut watch = c.watch(0, "Pod", "", "", "");
        let first = watch.next().await.expect("an item");
        assert!(matches!(first, Err(Error::Refused(_))), "{first:?}");
        assert!(start.elapsed() >= Duration::from_secs(5), "a watch: for retry_for: {:?}", start.elapsed());
        assert!(watch.next().await.is_none(), "and then it ends");
    }

    /// Each attempt of a call is told whether an earlier one may have been proposed: not after
    /// "not the leader" (the server says it proposed nothing), and from the first answer that
    /// does not say so on (here UNAVAILABLE "no quorum"), so that a write's retry is marked as
    /// one and a first attempt sent again is not.
    #[tokio::test(start_paused = true)]
    async fn attempts_after_one_that_may_have_been_proposed_are_retries() {
        let c = Client::new(["127.0.0.1:1"]).expect("valid");
        let not_leader = || {
            tonic::Status::from(Error::Unavailable {
                message: "not the leader".into(),
                leader: None,
                not_proposed: true,
            })
        };
        let mut seen = Vec::new();
        c.call_attempts(|_, retry| {
            seen.push(retry);
            // Not the leader (nothing proposed), then no quorum (a proposal may have been made).
            let answer = match seen.len() {
                1 => Err(not_leader()),
                2 => Err(tonic::Status::unavailable("raft: no quorum")),
                3 => Err(not_leader()),
                _ => Ok(tonic::Response::new(())),
            };
            async move { answer }
        })
        .await
        .expect("the fourth attempt succeeds");
        assert_eq!(seen, [false, false, true, true]);
    }

    /// Two servers that name each other as the leader (their views disagree for a moment)
    /// do not bounce a call between them without pause: after the first redirect the client
    /// backs off, so the call's time runs and its `retry_for` ends it. Without the pause the
    /// 50 attempts below take no time at all.
    #[tokio::test(start_paused = true)]
    async fn servers_naming_each_other_as_leader_do_not_bounce_a_call_without_pause() {
        let c = Client::new(["127.0.0.1:1", "127.0.0.1:2"]).expect("valid");
        let other = c.clone();
        let start = tokio::time::Instant::now();
        let mut attempts = 0;
        c.call_attempts(|_, _| {
            attempts += 1;
            let here = other.current_server();
            let there = if here.ends_with(":1") { "127.0.0.1:2" } else { "127.0.0.1:1" };
            let answer = if attempts < 50 {
                Err(tonic::Status::from(Error::Unavailable {
                    message: "not the leader".into(),
                    leader: Some(there.to_owned()),
                    not_proposed: true,
                }))
            } else {
                Ok(tonic::Response::new(()))
            };
            async move { answer }
        })
        .await
        .expect("the 50th attempt succeeds");
        assert!(start.elapsed() >= Duration::from_secs(5), "backed off: {:?}", start.elapsed());
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Client>();
    }
}
