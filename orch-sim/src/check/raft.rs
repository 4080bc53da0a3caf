//! Raft's safety, as the nodes' samples and applications show it: election safety; a node's
//! commit index never goes back while it runs (a restart may lose the unsynced commit hint, so
//! each start of a node is checked on its own); every replica that applied index i applied the
//! same entry there (so no committed entry ever changed).
//!
//! **Election safety, as openraft defines it.** orch uses openraft's advanced leader ids: a
//! leader is identified by (term, node id), and votes are ordered by that pair, so two nodes
//! may lead in one term (a stale leader cut off from the others, and one elected later with a
//! higher node id). "At most one leader per term" does not hold there by design; what does is
//! that within a term leaders are elected in increasing node id (a voter never grants a vote
//! lower than one it granted) and at most once each. The checker checks that order: a leader
//! first seen in a term after a leader of a higher node id was is a violation.

use std::collections::BTreeMap;

use super::Checker;
use crate::history::History;

/// The Raft checker.
#[derive(Debug, Default)]
pub struct Raft;

impl Checker for Raft {
    fn name(&self) -> &'static str {
        "raft"
    }

    fn check(&self, history: &History) -> Vec<String> {
        let mut found = Vec::new();
        // Per term, the leaders in the order first seen.
        let mut leaders: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut commits: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for s in &history.samples {
            if s.leader {
                let seen = leaders.entry(s.term).or_default();
                if !seen.contains(&s.node) {
                    if let Some(higher) = seen.iter().find(|n| **n > s.node) {
                        found.push(format!(
                            "term {}: node {} was elected after node {higher} led the same term (seen at {} ms)",
                            s.term, s.node, s.at_ms
                        ));
                    }
                    seen.push(s.node);
                }
            }
            let commit = commits.entry((s.node, s.incarnation)).or_insert(s.commit);
            if s.commit < *commit {
                found.push(format!(
                    "node {} (start {}): commit index went back from {} to {} at {} ms",
                    s.node, s.incarnation, commit, s.commit, s.at_ms
                ));
            }
            *commit = (*commit).max(s.commit);
        }
        let mut applied: BTreeMap<u64, (u64, [u8; 32])> = BTreeMap::new();
        for a in &history.applications {
            match applied.get(&a.index) {
                Some((node, digest)) if *digest != a.digest => {
                    found.push(format!("index {}: node {} applied another entry than node {node} did", a.index, a.node))
                }
                Some(_) => {}
                None => {
                    applied.insert(a.index, (a.node, a.digest));
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Application, Sample};

    fn sample(node: u64, incarnation: u64, term: u64, leader: bool, commit: u64) -> Sample {
        Sample { node, incarnation, at_ms: 0, term, leader, commit, applied: (0, [0; 32]) }
    }

    fn application(node: u64, index: u64, digest: u8) -> Application {
        Application { node, index, digest: [digest; 32], fresh: Vec::new(), requests: Vec::new(), changes: Vec::new() }
    }

    #[test]
    fn a_good_history_passes() {
        let mut h = History {
            samples: vec![sample(1, 0, 1, true, 3), sample(2, 0, 1, false, 3), sample(2, 0, 2, true, 4)],
            ..History::default()
        };
        h.samples.push(sample(1, 1, 2, false, 1)); // restarted: its commit hint was lost
        h.applications = vec![application(1, 1, 7), application(2, 1, 7)];
        assert!(Raft.check(&h).is_empty());
    }

    #[test]
    fn a_leader_elected_below_another_of_its_term_fails() {
        // A stale leader (1) and one elected after it with a higher id (2): openraft's order.
        let samples = vec![sample(1, 0, 3, true, 0), sample(2, 0, 3, true, 0), sample(1, 0, 3, true, 0)];
        assert!(Raft.check(&History { samples, ..History::default() }).is_empty());
        // Node 1 elected in term 3 after node 2 led it: a vote granted below one granted before.
        let samples = vec![sample(2, 0, 3, true, 0), sample(1, 0, 3, true, 0), sample(1, 0, 3, true, 0)];
        let found = Raft.check(&History { samples, ..History::default() });
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("was elected after node 2"), "{found:?}");
    }

    #[test]
    fn a_commit_index_going_back_fails() {
        let h = History { samples: vec![sample(1, 0, 1, false, 5), sample(1, 0, 1, false, 4)], ..History::default() };
        assert!(Raft.check(&h)[0].contains("went back"));
    }

    #[test]
    fn two_entries_at_one_index_fail() {
        let h = History { applications: vec![application(1, 4, 1), application(3, 4, 2)], ..History::default() };
        assert!(Raft.check(&h)[0].contains("another entry"));
    }
}
