//! Replicas at the same applied index hold the same state (the same digest).

use std::collections::BTreeMap;

use super::Checker;
use crate::history::History;

/// The state-digest checker.
#[derive(Debug, Default)]
pub struct StateDigests;

impl Checker for StateDigests {
    fn name(&self) -> &'static str {
        "state"
    }

    fn check(&self, history: &History) -> Vec<String> {
        let mut found = Vec::new();
        let mut seen: BTreeMap<u64, (u64, [u8; 32])> = BTreeMap::new();
        for s in &history.samples {
            let (index, digest) = s.applied;
            match seen.get(&index) {
                Some((node, d)) if *d != digest => found.push(format!(
                    "applied index {index}: node {} holds another state than node {node} did (at {} ms)",
                    s.node, s.at_ms
                )),
                Some(_) => {}
                None => {
                    seen.insert(index, (s.node, digest));
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Sample;

    fn sample(node: u64, applied: u64, digest: u8) -> Sample {
        Sample { node, incarnation: 0, at_ms: 0, term: 1, leader: false, commit: 0, applied: (applied, [digest; 32]) }
    }

    #[test]
    fn equal_states_pass_and_a_diverged_replica_fails() {
        let mut h = History { samples: vec![sample(1, 5, 1), sample(2, 5, 1), sample(3, 6, 2)], ..History::default() };
        assert!(StateDigests.check(&h).is_empty());
        h.samples.push(sample(3, 5, 9));
        let found = StateDigests.check(&h);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("applied index 5: node 3"), "{found:?}");
    }
}
