//! Watches over the gRPC API, through a proxy that cuts the stream anywhere, freezes it, or
//! lets it through: a watch that resumes after any cut sees exactly what an uncut watch saw
//! (never part of a revision, never a revision twice), and a watch to a host that vanished
//! ends on either side instead of hanging.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use orch_api::{Client, ClientOptions, WatchItem, WatchStream};
use orch_core::{Command, EventType, Kind, ObjectKey, State};
use orch_daemon::api::ApiService;
use orch_daemon::metrics::Metrics;
use orch_raft::control_plane::{Consistency, ControlPlane, SnapshotSettings};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed, TestRunner};

use crate::proxy::{Mode, Proxy};
use crate::{DEADLINE, eventually, pod, propose};

/// One revision as a watcher saw it: its number and its events (type and name).
type Seen = (u64, Vec<(EventType, String)>);

/// A single-node control plane with the API served on loopback.
struct Server {
    cp: ControlPlane,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Splits a revision's events into responses of at most `message_bytes`.
    async fn start(message_bytes: usize) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let cp = ControlPlane::builder(1, dir.path())
            .single_node()
            .progress_interval(Duration::from_millis(100))
            .snapshots(SnapshotSettings { every_entries: 1_000_000, ..SnapshotSettings::default() })
            .start()
            .await
            .expect("starts");
        eventually("a leader", || (cp.metrics().leader == Some(1)).then_some(())).await;
        let api =
            ApiService::new(cp.clone(), Arc::new(Metrics::new())).with_watch_message_bytes(message_bytes).server();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("address");
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder().add_service(api).serve_with_incoming(incoming).await;
        });
        Self { cp, addr, _dir: dir, task }
    }

    async fn stop(self) {
        self.task.abort();
        self.cp.shutdown().await.expect("stops");
    }
}

fn client(addr: SocketAddr, options: ClientOptions) -> Client {
    Client::with_options([addr.to_string()], options).expect("client")
}

/// Reads a watch until it has reached `until`, keeping the revisions with events.
async fn collect(watch: &mut WatchStream, until: u64) -> Vec<Seen> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let item = tokio::time::timeout_at(deadline, watch.next()).await.expect("the watch keeps up");
        let item = item.expect("the stream is open").expect("no error");
        if let WatchItem::Events { revision, events } = &item {
            seen.push((*revision, events.iter().map(|e| (e.event_type, e.object.meta().name.to_string())).collect()));
        }
        if item.revision() >= until {
            return seen;
        }
    }
}

/// Reads a watch until a revision holds the pod named `end`, keeping the revisions with events.
async fn collect_to(watch: &mut WatchStream, end: &str) -> Vec<Seen> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let item = tokio::time::timeout_at(deadline, watch.next()).await.expect("the watch keeps up");
        if let WatchItem::Events { revision, events } = item.expect("the stream is open").expect("no error") {
            let done = events.iter().any(|e| e.object.meta().name.as_str() == end);
            seen.push((revision, events.iter().map(|e| (e.event_type, e.object.meta().name.to_string())).collect()));
            if done {
                return seen;
            }
        }
    }
}

/// Writes one entry of `big` pod creates (one revision), then `singles` entries of one each;
/// returns the revisions before and after.
async fn history(cp: &ControlPlane, big: usize, singles: usize) -> (u64, u64) {
    // (openraft's metrics may trail the state; a linearizable read includes every write made.)
    let before = cp.read(Consistency::Linearizable, State::applied_index).await.expect("reads");
    // A fresh state's revision is 0, which a watch reads as "now"; the entries up to 1 (the
    // first membership and the leader's blank entry) carry no events.
    let before = before.max(1);
    let batch = (0..big).map(|i| pod(&format!("big-{before}-{i:03}"))).collect();
    propose(&[cp], vec![Command::Batch(batch)]).await;
    let mut last = 0;
    for i in 0..singles {
        last = propose(&[cp], vec![pod(&format!("one-{before}-{i:03}"))]).await;
    }
    (before, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_cut_anywhere_in_a_revision_resumes_before_it() {
    let server = Server::start(512).await;
    let (from, until) = history(&server.cp, 150, 10).await;
    let mut uncut = client(server.addr, ClientOptions::default()).watch(from, "Pod", "", "", "");
    let expected = collect(&mut uncut, until).await;
    assert_eq!(expected.len(), 11);
    assert_eq!(expected[0].1.len(), 150, "the big entry is one revision, delivered whole");

    let proxy = Proxy::start(server.addr).await;
    // From the first bytes of the stream to past its end; the big revision spans dozens of
    // 512-byte responses, so most cuts fall inside it, after its first response.
    for cut in (150..16_000).step_by(487) {
        proxy.cut_after([cut]);
        let connections = proxy.connections();
        let mut watch = client(proxy.addr(), ClientOptions::default()).watch(from, "Pod", "", "", "");
        assert_eq!(collect(&mut watch, until).await, expected, "cut after {cut} bytes");
        assert_eq!(proxy.connections() - connections, 2, "the stream was cut once and resumed once");
    }
    server.stop().await;
}

/// Three nodes, each serving the API behind a proxy of its own.
struct Cluster {
    nodes: Vec<ControlPlane>,
    proxies: Vec<Proxy>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start(message_bytes: usize) -> Self {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
        let mut nodes = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let id = i as u64 + 1;
            let mut builder = ControlPlane::builder(id, dir.path()).progress_interval(Duration::from_millis(100));
            builder = if id > 1 { builder.join() } else { builder.single_node() };
            nodes.push(builder.start().await.expect("starts"));
            if id == 1 {
                eventually("node 1 leads", || (nodes[0].metrics().leader == Some(1)).then_some(())).await;
            }
        }
        for n in &nodes[1..] {
            nodes[0].add_member(n.id(), n.address()).await.expect("adds a member");
        }
        let (mut proxies, mut tasks) = (Vec::new(), Vec::new());
        for n in &nodes {
            let api = ApiService::new(n.clone(), Arc::new(Metrics::new())).with_watch_message_bytes(message_bytes);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
            let addr = listener.local_addr().expect("address");
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            tasks.push(tokio::spawn(async move {
                let _ =
                    tonic::transport::Server::builder().add_service(api.server()).serve_with_incoming(incoming).await;
            }));
            proxies.push(Proxy::start(addr).await);
        }
        Self { nodes, proxies, tasks, _dirs: dirs }
    }

    fn addrs(&self) -> Vec<String> {
        self.proxies.iter().map(|p| p.addr().to_string()).collect()
    }

    async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for n in &self.nodes {
            n.shutdown().await.expect("stops");
        }
    }
}

#[test]
fn a_watcher_cut_at_random_points_sees_what_an_uncut_watcher_saw() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let cluster = runtime.block_on(async {
        let cluster = Cluster::start(700).await;
        history(&cluster.nodes[0], 100, 5).await;
        cluster
    });
    // A fixed seed: the same cut points on every run (a failure replays), and the check below
    // that the cuts happened is not left to chance.
    let config = ProptestConfig { cases: 16, rng_seed: RngSeed::Fixed(0x0c4c_9009), ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config);
    let connections_before: usize = cluster.proxies.iter().map(Proxy::connections).sum();
    // Where each server's streams are cut (bytes from the server, one budget per connection),
    // and how many of the case's writes come after the watches started.
    let cuts = proptest::collection::vec(proptest::collection::vec(100usize..30_000, 0..3), 3);
    let case = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&(cuts, 0usize..4), |(cuts, live)| {
            let end = format!("end-{}", case.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            let (seen, expected) = runtime.block_on(async {
                let leader = &cluster.nodes[0];
                // Some of the case's writes are history when the watch starts, the rest live.
                let (from, _) = history(leader, 40, 2).await;
                for _ in 0..(3 - live) {
                    history(leader, 30, 2).await;
                }
                for (proxy, budgets) in cluster.proxies.iter().zip(&cuts) {
                    proxy.cut_after(budgets.iter().copied());
                }
                // The cut watcher starts on node 1 and resumes on the next server after each cut.
                let cut_client = Client::with_options(cluster.addrs(), ClientOptions::default()).expect("client");
                let mut cut = cut_client.watch(from, "Pod", "", "", "");
                let reader = {
                    let end = end.clone();
                    tokio::spawn(async move { collect_to(&mut cut, &end).await })
                };
                for _ in 0..live {
                    history(leader, 30, 2).await;
                }
                propose(&[leader], vec![pod(&end)]).await;
                let seen = reader.await.expect("the reader ends");
                for proxy in &cluster.proxies {
                    proxy.clear_cuts();
                }
                // What an uncut watcher sees of the same revisions.
                let mut uncut =
                    client(cluster.proxies[0].addr(), ClientOptions::default()).watch(from, "Pod", "", "", "");
                let expected = collect_to(&mut uncut, &end).await;
                (seen, expected)
            });
            // Every pod the case wrote, once: 40 + 2, then three rounds of 30 + 2, then the end.
            let names: std::collections::BTreeSet<&String> =
                expected.iter().flat_map(|(_, e)| e.iter().map(|(_, n)| n)).collect();
            let events: usize = expected.iter().map(|(_, e)| e.len()).sum();
            prop_assert_eq!((events, names.len()), (42 + 3 * 32 + 1, 42 + 3 * 32 + 1));
            prop_assert_eq!(seen, expected);
            Ok(())
        })
        .expect("every cut watcher saw exactly the uncut sequence");
    // Two watchers a case, plus one connection for every cut that resumed a stream.
    let connections: usize = cluster.proxies.iter().map(Proxy::connections).sum::<usize>() - connections_before;
    assert!(connections >= 2 * 16 + 8, "streams were cut and resumed: {connections} connections for 16 cases");
    runtime.block_on(cluster.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_now_and_a_get_name_their_revision() {
    let server = Server::start(1 << 20).await;
    let (_, last) = history(&server.cp, 1, 2).await;
    let client = client(server.addr, ClientOptions::default());
    let (pods, listed_at) = client.list(Kind::Pod, None, "", None).await.expect("lists");
    let name = pods.last().expect("pods").meta().name.to_string();
    let (object, read_at) = client.get(&ObjectKey::new(Kind::Pod, "default", &name)).await.expect("gets");
    assert!(read_at >= last && read_at >= listed_at, "the get's revision {read_at} is the state it read");
    assert!(object.meta().resource_version.is_some_and(|rv| rv.0 <= read_at));

    let mut watch = client.watch(0, "Pod", "", "", "");
    let first = watch.next().await.expect("open").expect("no error");
    assert_eq!(first, WatchItem::Progress(read_at), "a watch from now is told where now is");
    let at = propose(&[&server.cp], vec![pod("after-now")]).await;
    let seen = collect(&mut watch, at).await;
    assert_eq!(seen, vec![(at, vec![(EventType::Added, "after-now".to_owned())])]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_to_a_server_that_vanished_ends_instead_of_hanging() {
    let server = Server::start(1 << 20).await;
    let proxy = Proxy::start(server.addr).await;
    let options = ClientOptions {
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_millis(400),
        request_timeout: Duration::from_secs(1),
        retry_for: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    let mut watch = client(proxy.addr(), options).watch(0, "Pod", "", "", "");
    assert!(matches!(watch.next().await, Some(Ok(WatchItem::Progress(_)))));
    // The host vanishes: its connections stay open and nothing comes back, not even pings.
    proxy.set(Mode::Freeze);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, watch.next()).await.expect("the watch ends instead of hanging") {
            Some(Ok(WatchItem::Progress(_))) => {} // what was in flight before the freeze
            Some(Ok(other)) => panic!("nothing was written: {other:?}"),
            Some(Err(_)) | None => break,
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_drops_a_watch_whose_client_vanished() {
    let dir = tempfile::tempdir().expect("dir");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let config = orch_daemon::config::Config {
        data_dir: dir.path().to_path_buf(),
        api_addr: any,
        raft_addr: any,
        http_addr: any,
        keepalive: (Duration::from_millis(200), Duration::from_millis(400)),
        ..orch_daemon::config::Config::default()
    };
    let mut orchd = orch_daemon::server::Orchd::start(config, Vec::new()).await.expect("starts");
    let proxy = Proxy::start(orchd.api_addr()).await;
    // The client itself would never notice: it pings once an hour.
    let options = ClientOptions {
        keepalive_interval: Duration::from_secs(3600),
        keepalive_timeout: Duration::from_secs(3600),
        ..ClientOptions::default()
    };
    let mut watch = client(proxy.addr(), options).watch(0, "Pod", "", "", "");
    assert!(matches!(watch.next().await, Some(Ok(WatchItem::Progress(_)))));
    assert_eq!(orchd.metrics().watches.get(), 1);
    proxy.set(Mode::Freeze);
    eventually("the server dropped the watch", || (orchd.metrics().watches.get() == 0).then_some(())).await;
    drop(watch);
    orchd.shutdown().await;
}
