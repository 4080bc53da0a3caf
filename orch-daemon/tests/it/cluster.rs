//! Three `orchd` processes: the leader is killed with SIGKILL while a client writes; the client
//! carries on through the new leader and every acknowledged write is there exactly once; the
//! killed node restarts and catches up; a fourth member joins and one is removed; a leader
//! stopped with SIGTERM hands over first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use orch_api::{Client, ClientOptions, Error};
use orch_core::{Kind, Object};

use crate::harness::{Daemon, WAIT, api, initial_members, ok, raft};

const NET: u8 = 21;

fn namespace(name: &str) -> Object {
    orch_core::parse_manifests(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"))
        .expect("valid")
        .remove(0)
}

/// Polls an async condition until it holds, or fails after [`WAIT`].
async fn until<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn leader(client: &Client) -> u64 {
    until("a leader", || async { client.members().await.ok().map(|m| m.leader).filter(|l| *l != 0) }).await
}

/// The status of one node, asked directly.
async fn status_of(addr: &str) -> Option<orch_api::pb::StatusResponse> {
    let options = ClientOptions {
        retry_for: Duration::ZERO,
        request_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    Client::with_options([addr], options).ok()?.status().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_carries_on_when_its_leader_is_killed() {
    let root = tempfile::tempdir().expect("temp dir");
    let members = initial_members(NET, 3);
    let flags = ["--initial-members".to_owned(), members];
    let mut nodes: Vec<Daemon> = (1..=3).map(|i| Daemon::new(root.path(), NET, i, &flags)).collect();
    for n in &mut nodes {
        n.start();
    }
    let servers: Vec<String> = (1..=3).map(|i| api(NET, i)).collect();
    let client = Client::new(servers.clone()).expect("client");
    let first = leader(&client).await;

    // A follower refuses a write with UNAVAILABLE, the leader's API address, and the mark that
    // nothing was proposed (sent again, the write is still a first attempt).
    let follower = if first == 1 { 2 } else { 1 };
    let hint = until("the follower to name the leader", || async {
        // A fresh client each time: one that was told the leader moves there.
        let options = ClientOptions { retry_for: Duration::ZERO, ..ClientOptions::default() };
        let direct = Client::with_options([api(NET, follower)], options).expect("client");
        match direct.create(&namespace("hinted")).await {
            Err(Error::Unavailable { leader: Some(l), not_proposed, .. }) => Some((l, not_proposed)),
            _ => None,
        }
    })
    .await;
    assert_eq!(hint, (api(NET, first), true));

    // A node agent's heartbeat: a follower names the leader, which takes it (its lease held by
    // Raft's own heartbeats, with no write in between); the client follows the hint.
    let node =
        "apiVersion: v1\nkind: Node\nmetadata: {name: hb}\nstatus: {conditions: [{type: Ready, status: 'True'}]}\n";
    client.create(&orch_core::parse_manifests(node).expect("valid")[0]).await.expect("node");
    let options = ClientOptions { retry_for: Duration::ZERO, ..ClientOptions::default() };
    let direct = Client::with_options([api(NET, follower)], options).expect("client");
    match direct.heartbeat("hb").await {
        Err(Error::Unavailable { leader: Some(l), .. }) => assert_eq!(l, api(NET, first)),
        other => panic!("a follower names the leader, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // idle: only Raft's heartbeats hold the lease
    client.heartbeat("hb").await.expect("the leader takes it");

    // A writer creates namespaces back to back and records what was acknowledged.
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (client, acked, stop) = (client.clone(), Arc::clone(&acked), Arc::clone(&stop));
        async move {
            let mut names = Vec::new();
            let mut errors = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w-{i:05}");
                match client.create(&namespace(&name)).await {
                    Ok(_) => {
                        names.push(name);
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.push((name, e)),
                }
                i += 1;
            }
            (names, errors)
        }
    });
    until("writes before the kill", || async { (acked.load(Ordering::Relaxed) >= 30).then_some(()) }).await;
    let killed = usize::try_from(first - 1).expect("index");
    nodes[killed].kill();
    let at_kill = acked.load(Ordering::Relaxed);
    until("writes through the new leader", || async { (acked.load(Ordering::Relaxed) >= at_kill + 30).then_some(()) })
        .await;
    stop.store(true, Ordering::Relaxed);
    let (names, errors) = writer.await.expect("writer");
    assert!(errors.is_empty(), "the client should have carried on through the new leader: {errors:?}");
    let second = leader(&client).await;
    assert_ne!(second, first, "a new leader took over");

    // Every acknowledged write is there, once (a second apply of a create would have
    // answered AlreadyExists to the writer).
    let (listed, _) = client.list(Kind::Namespace, None, "", None).await.expect("lists");
    let listed: std::collections::BTreeSet<String> =
        listed.iter().map(|o| o.meta().name.to_string()).filter(|n| n.starts_with("w-")).collect();
    for name in &names {
        assert!(listed.contains(name), "acknowledged {name} is missing");
    }
    assert_eq!(listed.len(), names.len(), "nothing but the acknowledged writes");

    // The killed node restarts from its data and catches up.
    let commit = status_of(&api(NET, second)).await.expect("leader status").commit_index;
    nodes[killed].start();
    until("the restarted node to catch up", || async {
        status_of(&api(NET, first)).await.filter(|s| s.applied_index >= commit).map(|_| ())
    })
    .await;

    // A fourth member joins through the API; then one is removed with orchctl.
    let joined = ["--join".to_owned(), servers.join(",")];
    let mut fourth = Daemon::new(root.path(), NET, 4, &joined);
    fourth.start();
    until("node 4 to become a voter", || async {
        client.members().await.ok().filter(|m| m.members.iter().any(|x| x.id == 4 && x.voter)).map(|_| ())
    })
    .await;
    let four = client.members().await.expect("members");
    let m4 = four.members.iter().find(|m| m.id == 4).expect("node 4");
    assert_eq!((m4.raft_address.as_str(), m4.api_address.as_str()), (raft(NET, 4).as_str(), api(NET, 4).as_str()));
    let shown = tokio::task::spawn_blocking({
        let s = servers.join(",");
        move || ok(&s, &["cluster", "members"])
    })
    .await
    .expect("orchctl");
    assert!(shown.starts_with("ID   ROLE") && shown.contains(&api(NET, 4)), "{shown}");

    let remove = if second == 3 { 2 } else { 3 };
    let removed = tokio::task::spawn_blocking({
        let s = servers.join(",");
        move || ok(&s, &["cluster", "remove-member", &remove.to_string()])
    })
    .await
    .expect("orchctl");
    assert!(removed.starts_with(&format!("member {remove} removed\n")), "{removed}");
    let after = client.members().await.expect("members");
    assert!(after.members.iter().all(|m| m.id != remove), "{after:?}");
    assert_eq!(after.members.len(), 3);

    // Still writable with the new membership.
    client.create(&namespace("after-change")).await.expect("writes after the membership change");
    let missing = client.get(&orch_core::ObjectKey::new(Kind::Namespace, "", "never")).await;
    assert!(matches!(missing, Err(Error::NotFound(_))));

    // SIGTERM on the leader hands leadership over before it stops (a rolling restart costs no
    // election), and the cluster goes on writing.
    let current = leader(&client).await;
    let daemon = if current == 4 { &mut fourth } else { &mut nodes[usize::try_from(current - 1).expect("index")] };
    assert!(daemon.terminate().success(), "orchd exits 0 on SIGTERM:\n{}", daemon.log());
    assert!(daemon.log().contains("handed leadership over before stopping"), "{}", daemon.log());
    client.create(&namespace("after-hand-over")).await.expect("writes after the hand-over");
    assert_ne!(leader(&client).await, current);
}
