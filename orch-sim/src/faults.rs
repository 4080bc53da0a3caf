//! The fault scheduler: at random moments it draws a fault from the enabled mix and injects
//! it, keeping a majority of the nodes able to recover (it never crashes more than a minority
//! at once).

use std::sync::Arc;
use std::time::Duration;

use orch_raft::local::Faults as LinkFaults;

use crate::FaultMix;
use crate::cluster::{Cluster, lock};

/// What the scheduler did, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Nodes crashed.
    pub crashes: u64,
    /// Nodes restarted.
    pub restarts: u64,
    /// Partitions made.
    pub partitions: u64,
    /// Heals.
    pub heals: u64,
    /// Clock changes.
    pub clocks: u64,
    /// Snapshots forced.
    pub compactions: u64,
    /// Disk latency spikes.
    pub disk_spikes: u64,
    /// Disks made to fail their writes.
    pub io_errors: u64,
    /// Times every client connection to a node was broken.
    pub resets: u64,
    /// Voters removed.
    pub removals: u64,
    /// Nodes that joined as learners and were promoted to voters.
    pub additions: u64,
}

/// The link faults of a mix, drawn from `seed`.
pub(crate) fn link_faults(mix: &FaultMix, seed: u64) -> LinkFaults {
    LinkFaults {
        seed,
        loss_per_mille: mix.loss_per_mille,
        latency_ms: mix.latency_ms,
        duplicate_per_mille: mix.duplicate_per_mille,
    }
}

/// Injects one fault drawn from `mix`.
pub(crate) async fn step(cluster: &mut Cluster, mix: &FaultMix, counts: &mut FaultCounts) {
    let world = Arc::clone(&cluster.world);
    let members = cluster.members();
    let majority = members.len() / 2 + 1;
    // Nodes whose Raft stopped (an injected IO error): the operator restarts them.
    for id in cluster.up() {
        let stopped = cluster.nodes[&id].cp.as_ref().is_some_and(|cp| cp.health().is_err());
        if stopped {
            cluster.crash(id);
            counts.crashes += 1;
        }
    }
    let choice = world.draw(|r| r.below(100));
    match choice {
        0..15 if mix.crashes => {
            let up = cluster.up();
            let up_members = up.iter().filter(|id| members.contains(id)).count();
            if up_members > majority {
                // The leader half the time: failover is where bugs live.
                let leader = cluster.leader();
                let victim = world.draw(|r| match leader {
                    Some(l) if r.chance(500) => l,
                    _ => up[r.pick(up.len())],
                });
                cluster.crash(victim);
                counts.crashes += 1;
            }
        }
        15..30 if mix.crashes => {
            let down = cluster.down();
            if !down.is_empty() {
                let id = down[world.draw(|r| r.pick(down.len()))];
                if cluster.start(id).await.is_ok() {
                    counts.restarts += 1;
                }
            }
        }
        30..42 if mix.partitions => {
            let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
            let kind = world.draw(|r| r.below(3));
            match (kind, cluster.leader()) {
                // Isolate the leader, both ways.
                (0, Some(leader)) => {
                    for other in ids.iter().filter(|o| **o != leader) {
                        cluster.router.cut(leader, *other);
                        cluster.router.cut(*other, leader);
                    }
                    world.fault(format!("isolate leader {leader}"));
                }
                // One way only: an asymmetric partition.
                (1, _) => {
                    let (a, b) = world.draw(|r| (ids[r.pick(ids.len())], ids[r.pick(ids.len())]));
                    if a != b {
                        cluster.router.cut(a, b);
                        world.fault(format!("cut {a} -> {b}"));
                    }
                }
                // A random split, both ways.
                _ => {
                    let side: Vec<bool> = ids.iter().map(|_| world.draw(|r| r.chance(500))).collect();
                    for (i, a) in ids.iter().enumerate() {
                        for (j, b) in ids.iter().enumerate() {
                            if side[i] != side[j] {
                                cluster.router.cut(*a, *b);
                            }
                        }
                    }
                    world.fault(format!("split {side:?}"));
                }
            }
            counts.partitions += 1;
        }
        42..60 if mix.partitions => {
            cluster.router.heal();
            world.fault("heal links".to_owned());
            counts.heals += 1;
        }
        60..66 if mix.clocks => {
            let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
            let id = ids[world.draw(|r| r.pick(ids.len()))];
            let (offset, rate) = world.draw(|r| {
                // Mostly within a minute; one time in four a jump past the sessions' idle
                // limit (30 minutes), so that every client's session expires and its retries
                // meet "outcome unknown".
                let offset = if r.chance(250) {
                    i64::try_from(r.between(31 * 60_000, 90 * 60_000)).unwrap_or(0)
                } else {
                    i64::try_from(r.below(120_000)).unwrap_or(0) - 60_000
                };
                let rate = i64::try_from(r.between(500, 2000)).unwrap_or(1000);
                (offset, rate)
            });
            cluster.nodes[&id].clock.set(offset, rate);
            world.fault(format!("clock of node {id}: offset {offset} ms, rate {rate}/1000"));
            counts.clocks += 1;
        }
        66..72 if mix.compaction => lag_behind_compaction(cluster, counts).await,
        72..78 if mix.compaction => {
            let up = cluster.up();
            if !up.is_empty() {
                let id = up[world.draw(|r| r.pick(up.len()))];
                if let Some(cp) = &cluster.nodes[&id].cp {
                    let _ = cp.raft().trigger().snapshot().await;
                }
                world.fault(format!("snapshot on node {id}"));
                counts.compactions += 1;
            }
        }
        78..86 if mix.disk_spikes => {
            let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
            let id = ids[world.draw(|r| r.pick(ids.len()))];
            *lock(&cluster.nodes[&id].sync_ms) = (50, 400);
            world.fault(format!("slow disk on node {id}"));
            counts.disk_spikes += 1;
        }
        86..90 if mix.disk_spikes => {
            for slot in cluster.nodes.values() {
                *lock(&slot.sync_ms) = mix.sync_ms;
            }
        }
        90..92 if mix.io_errors => {
            let up = cluster.up();
            if up.iter().filter(|id| members.contains(id)).count() > majority {
                let id = up[world.draw(|r| r.pick(up.len()))];
                cluster.nodes[&id].disk.fail_writes(true);
                if let Some(slot) = cluster.nodes.get_mut(&id) {
                    slot.failing = true;
                }
                world.fault(format!("disk of node {id} fails its writes"));
                counts.io_errors += 1;
            }
        }
        92..96 if mix.partitions => {
            // A proxy in front of a node drops every client connection to it.
            let up = cluster.up();
            if !up.is_empty() {
                let id = up[world.draw(|r| r.pick(up.len()))];
                let n = world.api.reset(id);
                world.fault(format!("reset the {n} client connections of node {id}"));
                counts.resets += 1;
            }
        }
        96..100 if mix.membership => change_membership(cluster, &members, counts).await,
        _ => {}
    }
}

/// A follower falls behind a compacted log: it is cut off from every other node while the
/// clients go on writing, the leader snapshots and purges its log, and the follower's links
/// come back. It catches up by installing the leader's snapshot (when the purge passed its
/// log; openraft may postpone a purge while it replicates), under whatever watches are live on
/// it (they must end loudly, or go on if they had seen everything). Only the links this fault
/// cut are restored: an earlier partition stays as it was.
async fn lag_behind_compaction(cluster: &mut Cluster, counts: &mut FaultCounts) {
    let world = Arc::clone(&cluster.world);
    let Some(leader) = cluster.leader() else { return };
    let followers: Vec<u64> = cluster.up().into_iter().filter(|id| *id != leader).collect();
    if followers.is_empty() {
        return;
    }
    let (lagging, behind_ms) = world.draw(|r| (followers[r.pick(followers.len())], r.between(300, 1500)));
    let already = cluster.router.cuts();
    let links: Vec<(u64, u64)> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != lagging)
        .flat_map(|other| [(lagging, other), (other, lagging)])
        .filter(|link| !already.contains(link))
        .collect();
    for (from, to) in &links {
        cluster.router.cut(*from, *to);
    }
    world.fault(format!("node {lagging} falls behind for {behind_ms} ms"));
    cluster.wait(Duration::from_millis(behind_ms)).await;
    if let Some(cp) = cluster.nodes[&leader].cp.clone() {
        let target = cp.metrics().applied_index;
        let _ = cp.raft().trigger().snapshot().await;
        // The build takes a moment; the purge follows it.
        for _ in 0..20 {
            if cp.metrics().purged_index + cluster.snapshot_keep() >= target {
                break;
            }
            cluster.wait(Duration::from_millis(50)).await;
        }
        world.fault(format!("snapshot on node {leader}, log purged to {}", cp.metrics().purged_index));
        counts.compactions += 1;
    }
    for (from, to) in &links {
        cluster.router.mend(*from, *to);
    }
}

/// How long one membership call through the API is retried.
const MEMBERSHIP_CALL: Duration = Duration::from_secs(5);

/// Replaces a voter: a crashed one if there is one (an operator replacing a dead machine),
/// else any, the leader included. It is removed through the API, stops for good, and a new
/// node with a fresh disk starts, joins as a learner, catches up (from a snapshot, often) and
/// is promoted. A node still joining from an earlier change is added first.
async fn change_membership(cluster: &mut Cluster, members: &[u64], counts: &mut FaultCounts) {
    let world = Arc::clone(&cluster.world);
    if cluster.joining.is_some() {
        add_joining(cluster, counts).await;
        return;
    }
    cluster.retire_removed();
    if start_replacement(cluster).await {
        add_joining(cluster, counts).await;
        return;
    }
    let up = cluster.up();
    let down: Vec<u64> = members.iter().copied().filter(|id| !up.contains(id)).collect();
    let victim =
        world.draw(|r| if down.is_empty() { members[r.pick(members.len())] } else { down[r.pick(down.len())] });
    // The members left must still have a majority up.
    let left: Vec<u64> = members.iter().copied().filter(|id| *id != victim).collect();
    if left.iter().filter(|id| up.contains(id)).count() < left.len() / 2 + 1 {
        return;
    }
    let api = membership_client(&world);
    match api.remove_member(victim).await {
        Ok(_) => {}
        // The change was made by an earlier attempt whose answer was lost.
        Err(orch_api::Error::NotFound(_)) => {}
        Err(e) => {
            world.fault(format!("removing node {victim} failed: {e}"));
            return;
        }
    }
    cluster.retire(victim);
    counts.removals += 1;
    world.fault(format!("removed node {victim}"));
    if start_replacement(cluster).await {
        add_joining(cluster, counts).await;
    }
}

/// While the cluster has fewer voters than it started with and no node is joining, starts a
/// new node (a fresh disk, the next id) to join; whether one started.
async fn start_replacement(cluster: &mut Cluster) -> bool {
    if cluster.joining.is_some() || cluster.members().len() >= cluster.size() {
        return false;
    }
    let id = cluster.add_slot();
    if cluster.start(id).await.is_err() {
        return false;
    }
    cluster.joining = Some(id);
    true
}

/// Adds the joining node as a learner and promotes it, through the API.
async fn add_joining(cluster: &mut Cluster, counts: &mut FaultCounts) -> bool {
    let world = Arc::clone(&cluster.world);
    let Some(id) = cluster.joining else { return true };
    if cluster.nodes.get(&id).is_none_or(|s| s.cp.is_none()) && cluster.start(id).await.is_err() {
        return false;
    }
    let api = membership_client(&world);
    match api.add_member(id, &format!("local-{id}"), &crate::api::api_address(id)).await {
        Ok(_) => {
            cluster.joining = None;
            counts.additions += 1;
            world.fault(format!("added node {id}"));
            cluster.members();
            true
        }
        Err(e) => {
            world.fault(format!("adding node {id} failed: {e}"));
            false
        }
    }
}

fn membership_client(world: &crate::cluster::World) -> orch_api::Client {
    let mut rng = crate::rng::Rng::new(world.draw(crate::rng::Rng::next_u64));
    let id = orch_core::ClientId(u128::from(rng.next_u64() | 1));
    crate::workload::api_client(world, &mut rng, id, MEMBERSHIP_CALL)
}

/// Ends every fault: links restored, lost nodes restarted, disks back to normal (clocks keep
/// their rate and offset: the cluster must live with them).
pub(crate) async fn heal(cluster: &mut Cluster, mix: &FaultMix, counts: &mut FaultCounts) {
    cluster.router.heal();
    cluster.router.set_faults(Some(LinkFaults { loss_per_mille: 0, duplicate_per_mille: 0, ..link_faults(mix, 0) }));
    for id in cluster.up() {
        let stopped = cluster.nodes[&id].cp.as_ref().is_some_and(|cp| cp.health().is_err());
        if stopped {
            cluster.crash(id);
        }
    }
    for slot in cluster.nodes.values() {
        *lock(&slot.sync_ms) = mix.sync_ms;
        slot.disk.fail_writes(false);
    }
    for id in cluster.down() {
        // A start fails only if the disk failed it; try again shortly.
        for _ in 0..10 {
            if cluster.start(id).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A node removed by a call whose answer was lost stops too, and is replaced; a node still
    // joining is added (the operator finishes the replacement).
    for _ in 0..100 {
        if cluster.leader().is_some() {
            cluster.retire_removed();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start_replacement(cluster).await;
    for _ in 0..6 {
        if add_joining(cluster, counts).await {
            break;
        }
    }
}
