//! Failover after kill -9 of the leader, for several election timeouts: three control-plane
//! processes on loopback (this binary run as `--node`: a `ControlPlane` with RocksDB, fsync on,
//! as `orchd` runs it), the leader killed with SIGKILL, and the time until a survivor reports a
//! new leader, and until a write through it is applied. The killed node is restarted and caught
//! up before the next kill. Results: BENCHMARKS.md.
//!
//! `cargo bench -p orch-benches --bench failover` (ORCH_BENCH_DIR chooses the disk,
//! ORCH_BENCH_KILLS the kills per setting, default 8; ORCH_BENCH_ELECTION_MS a comma-separated
//! list of minimum election timeouts, each with the maximum twice it, default 1000,500,300;
//! ORCH_BENCH_HEARTBEAT_MS the heartbeat, default a fifth of each timeout). A node's errors go to
//! the bench's standard error.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use orch_core::{Command as Cmd, parse_manifests};
use orch_raft::control_plane::{ControlPlane, Error};

/// A node's line about itself: `leader <id or 0> <term>` when it changes, `wrote <ms>` after a
/// write it was asked for (`write` on its stdin) was applied.
fn run_node(id: u64, dir: &str, base_port: u16, election_ms: u64, heartbeat_ms: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let members = (1..=3u64).map(|i| (i, format!("127.0.0.1:{}", base_port + i as u16)));
        let listen = format!("127.0.0.1:{}", base_port + id as u16).parse().expect("address");
        let election = (Duration::from_millis(election_ms), Duration::from_millis(2 * election_ms));
        let node = ControlPlane::builder(id, dir)
            .listen(listen)
            .initial_members(members)
            .timing(Duration::from_millis(heartbeat_ms), election)
            .start()
            .await
            .expect("starts");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if line.is_ok_and(|l| l == "write") && tx.send(()).is_err() {
                    return;
                }
            }
        });
        let mut last = (None, 0);
        let mut k = 0;
        loop {
            let m = node.metrics();
            if (m.leader, m.term) != last {
                last = (m.leader, m.term);
                println!("leader {} {}", m.leader.unwrap_or(0), m.term);
                let _ = std::io::stdout().flush();
            }
            if rx.try_recv().is_ok() {
                let t = Instant::now();
                k += 1;
                let ns = parse_manifests(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: w-{id}-{k}}}\n"))
                    .expect("valid")
                    .remove(0);
                loop {
                    match node.propose(vec![Cmd::Create(ns.clone())]).await {
                        Ok(_) => break,
                        Err(Error::NotLeader { .. }) => tokio::time::sleep(Duration::from_millis(5)).await,
                        Err(e) => panic!("write failed: {e}"),
                    }
                }
                println!("wrote {:.1}", t.elapsed().as_secs_f64() * 1e3);
                let _ = std::io::stdout().flush();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
}

/// What the parent hears from the nodes.
enum Heard {
    Leader { from: u64, leader: u64, at: Instant },
    Wrote { from: u64 },
}

struct Node {
    child: Child,
    stdin: ChildStdin,
}

fn spawn(id: u64, dir: &std::path::Path, base_port: u16, timing: (u64, u64), tx: &mpsc::Sender<Heard>) -> Node {
    let exe = std::env::args().next().expect("argv[0]");
    let mut child = Command::new(exe)
        .args(["--node", &id.to_string(), &dir.display().to_string(), &base_port.to_string()])
        .args([timing.0.to_string(), timing.1.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node process");
    let stdout = child.stdout.take().expect("stdout");
    let stdin = child.stdin.take().expect("stdin");
    let tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let at = Instant::now();
            let words: Vec<&str> = line.split_whitespace().collect();
            let heard = match words.as_slice() {
                ["leader", leader, _term] => Heard::Leader { from: id, leader: leader.parse().unwrap_or(0), at },
                ["wrote", _] => Heard::Wrote { from: id },
                _ => continue,
            };
            if tx.send(heard).is_err() {
                return;
            }
        }
    });
    Node { child, stdin }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) { (v[n / 2 - 1] + v[n / 2]) / 2.0 } else { v[n / 2] }
}

fn measure(election_ms: u64, heartbeat_ms: u64, kills: usize, base: &std::path::Path, base_port: u16) {
    let timing = (election_ms, heartbeat_ms);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir_in(base).expect("temp dir")).collect();
    let (tx, rx) = mpsc::channel();
    let mut nodes: Vec<Node> = (1..=3).map(|i| spawn(i, dirs[i as usize - 1].path(), base_port, timing, &tx)).collect();
    let mut leaders = [0u64; 3];
    let mut elected = Vec::new();
    let mut writable = Vec::new();
    let wait = Duration::from_secs(60);
    // Until every node knows the same leader.
    let settle = |rx: &mpsc::Receiver<Heard>, leaders: &mut [u64; 3], alive: &[bool; 3]| -> u64 {
        let deadline = Instant::now() + wait;
        loop {
            let known: Vec<u64> = (0..3).filter(|&i| alive[i]).map(|i| leaders[i]).collect();
            if known[0] != 0 && known.iter().all(|l| *l == known[0]) {
                return known[0];
            }
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Heard::Leader { from, leader, .. }) => leaders[from as usize - 1] = leader,
                Ok(Heard::Wrote { .. }) => {}
                Err(_) => panic!("no agreed leader within {wait:?}"),
            }
        }
    };
    settle(&rx, &mut leaders, &[true; 3]);
    for _ in 0..kills {
        // Let the cluster run a moment with the restarted node caught up, then take in what the
        // nodes said meanwhile (a line read after the kill must be news of after the kill).
        std::thread::sleep(Duration::from_millis(3 * election_ms));
        while let Ok(heard) = rx.try_recv() {
            if let Heard::Leader { from, leader: l, .. } = heard {
                leaders[from as usize - 1] = l;
            }
        }
        let leader = settle(&rx, &mut leaders, &[true; 3]);
        let victim = leader as usize - 1;
        let killed_at = Instant::now();
        nodes[victim].child.kill().expect("kill -9");
        let _ = nodes[victim].child.wait();
        leaders[victim] = 0;
        // The first survivor to name a new leader.
        let deadline = Instant::now() + wait;
        let new = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Heard::Leader { from, leader: l, at, .. }) if from as usize - 1 != victim && at >= killed_at => {
                    leaders[from as usize - 1] = l;
                    if l != 0 && l != leader {
                        elected.push((at - killed_at).as_secs_f64());
                        break l;
                    }
                }
                Ok(_) => {}
                Err(_) => panic!("no new leader within {wait:?}"),
            }
        };
        // A write through the new leader (asked of it directly).
        let writer = new as usize - 1;
        writeln!(nodes[writer].stdin, "write").expect("asks for a write");
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Heard::Wrote { from }) if from == new => {
                    writable.push(killed_at.elapsed().as_secs_f64());
                    break;
                }
                Ok(Heard::Leader { from, leader: l, .. }) => leaders[from as usize - 1] = l,
                Ok(_) => {}
                Err(_) => panic!("no write within {wait:?}"),
            }
        }
        nodes[victim] = spawn(victim as u64 + 1, dirs[victim].path(), base_port, timing, &tx);
        settle(&rx, &mut leaders, &[true; 3]);
    }
    for mut n in nodes {
        let _ = n.child.kill();
        let _ = n.child.wait();
    }
    let show = |v: &[f64]| v.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(" ");
    println!(
        "election {election_ms}-{} ms, heartbeat {} ms: new leader after {} s (median {:.2} s); writable after {} s (median {:.2} s)",
        2 * election_ms,
        heartbeat_ms,
        show(&elected),
        median(&mut elected.clone()),
        show(&writable),
        median(&mut writable.clone())
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes every bench binary.
    }
    if let Some(i) = args.iter().position(|a| a == "--node") {
        let id = args[i + 1].parse().expect("id");
        let port = args[i + 3].parse().expect("port");
        let election = args[i + 4].parse().expect("election ms");
        let heartbeat = args[i + 5].parse().expect("heartbeat ms");
        run_node(id, &args[i + 2], port, election, heartbeat);
        return;
    }
    let base = std::env::var("ORCH_BENCH_DIR").map_or_else(|_| std::env::temp_dir(), std::path::PathBuf::from);
    let kills = std::env::var("ORCH_BENCH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let settings = std::env::var("ORCH_BENCH_ELECTION_MS").unwrap_or_else(|_| "1000,500,300".to_owned());
    println!("three nodes on loopback, fsync on, kill -9 of the leader, {kills} kills per setting");
    for (k, ms) in settings.split(',').filter_map(|s| s.trim().parse::<u64>().ok()).enumerate() {
        let heartbeat = std::env::var("ORCH_BENCH_HEARTBEAT_MS").ok().and_then(|s| s.parse().ok());
        measure(ms, heartbeat.unwrap_or((ms / 5).max(20)), kills, &base, 17_100 + 10 * k as u16);
    }
}
