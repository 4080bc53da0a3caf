//! The API network: each node up serves orch's real gRPC API (orch-daemon's `ApiService`, the
//! one `orchd` serves) over in-memory byte streams, and the simulated clients are real
//! `orch_api::Client`s whose connector dials them. Leader discovery, redirects, retries under
//! the same serial, sessions and watch resumption are the client library's own code.
//!
//! Each connection runs through a relay task: a crash aborts the relays of the node's
//! connections, so its clients see the connection break as they would when a server dies, and
//! the `reset` fault does the same to a live node (a proxy dropping connections). A node that
//! is down refuses connections, as a closed port does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use orch_api::client::{Connecting, Connection, Connector};
use orch_raft::ControlPlane;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};

use crate::cluster::lock;

/// The port of every node's simulated API address.
pub(crate) const API_PORT: u16 = 7100;

/// The bytes an in-memory connection buffers each way.
const CONNECTION_BUFFER_BYTES: usize = 256 * 1024;

/// Connections waiting for the server to accept them, per node.
const ACCEPT_QUEUE_MAX: usize = 64;

/// The API address of node `id`.
pub(crate) fn api_address(id: u64) -> String {
    format!("node-{id}:{API_PORT}")
}

/// The node an API address names.
fn node_of(addr: &str) -> Option<u64> {
    addr.strip_prefix("node-")?.strip_suffix(&format!(":{API_PORT}"))?.parse().ok()
}

struct Server {
    incoming: mpsc::Sender<DuplexStream>,
    task: JoinHandle<()>,
    /// The relays of its connections.
    relays: Vec<AbortHandle>,
}

impl Server {
    fn reset(&mut self) -> usize {
        self.relays.retain(|r| !r.is_finished());
        let n = self.relays.len();
        for relay in self.relays.drain(..) {
            relay.abort();
        }
        n
    }
}

/// The nodes' API servers, and the connector that dials them.
#[derive(Clone, Default)]
pub(crate) struct ApiNet {
    servers: Arc<Mutex<BTreeMap<u64, Server>>>,
}

impl ApiNet {
    /// Node `id` serves the API of `cp` (replacing what it served before), handing heartbeats
    /// to its leader-only `loops` when it runs some (as orchd does).
    pub(crate) fn serve(&self, id: u64, cp: ControlPlane, loops: Option<orch_raft::leader::LoopSender>) {
        let (incoming, accept) = mpsc::channel::<DuplexStream>(ACCEPT_QUEUE_MAX);
        let mut service = orch_daemon::api::ApiService::new(cp, Arc::new(orch_daemon::metrics::Metrics::new()));
        if let Some(loops) = loops {
            service = service.with_loops(loops);
        }
        let service = service.server();
        let connections = futures_util::stream::unfold(accept, |mut accept| async move {
            accept.recv().await.map(|connection| (Ok::<_, std::io::Error>(connection), accept))
        });
        let task = tokio::spawn(async move {
            // It ends when its node stops (the task is aborted) or fails; either way its clients
            // meet broken or refused connections and move on, as they would from a dead orchd.
            let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(connections).await;
        });
        if let Some(mut old) = lock(&self.servers).insert(id, Server { incoming, task, relays: Vec::new() }) {
            old.task.abort();
            old.reset();
        }
    }

    /// Node `id` stops serving: its connections break, and new ones are refused.
    pub(crate) fn stop(&self, id: u64) {
        if let Some(mut server) = lock(&self.servers).remove(&id) {
            server.task.abort();
            server.reset();
        }
    }

    /// Breaks every connection to node `id`; how many there were.
    pub(crate) fn reset(&self, id: u64) -> usize {
        lock(&self.servers).get_mut(&id).map_or(0, Server::reset)
    }

    /// Stops every server.
    pub(crate) fn stop_all(&self) {
        let ids: Vec<u64> = lock(&self.servers).keys().copied().collect();
        for id in ids {
            self.stop(id);
        }
    }

    /// The connector of the simulated clients.
    pub(crate) fn connector(&self) -> Connector {
        let net = self.clone();
        Arc::new(move |addr: &str| -> Connecting {
            let dialed = net.dial(addr);
            Box::pin(async move { dialed })
        })
    }

    fn dial(&self, addr: &str) -> std::io::Result<Box<dyn Connection>> {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, format!("{addr}: nothing listens"));
        let id = node_of(addr).ok_or_else(refused)?;
        let mut servers = lock(&self.servers);
        let server = servers.get_mut(&id).ok_or_else(refused)?;
        let (client_end, mut relay_client) = tokio::io::duplex(CONNECTION_BUFFER_BYTES);
        let (mut relay_server, server_end) = tokio::io::duplex(CONNECTION_BUFFER_BYTES);
        server.incoming.try_send(server_end).map_err(|_| refused())?;
        let relay = tokio::spawn(async move {
            let _ = tokio::io::copy_bidirectional(&mut relay_client, &mut relay_server).await;
        });
        server.relays.retain(|r| !r.is_finished());
        server.relays.push(relay.abort_handle());
        Ok(Box::new(client_end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_their_node() {
        assert_eq!(node_of(&api_address(3)), Some(3));
        assert_eq!(node_of("node-x:7100"), None);
        assert_eq!(node_of("node-1:7101"), None);
    }
}
