//! A node never serves older state than it served before, across its crashes and restarts:
//! what it served was durable in its own log, so its recovered log reaches it, and its
//! recovery gate opens no earlier (ARCHITECTURE.md, the restarted-node invariant).

use std::collections::BTreeMap;

use super::Checker;
use crate::history::History;

/// The monotonic-reads checker.
#[derive(Debug, Default)]
pub struct MonotonicReads;

impl Checker for MonotonicReads {
    fn name(&self) -> &'static str {
        "monotonic-reads"
    }

    fn check(&self, history: &History) -> Vec<String> {
        let mut found = Vec::new();
        let mut served: BTreeMap<u64, u64> = BTreeMap::new();
        for (node, revision) in &history.stale_reads {
            let before = served.entry(*node).or_insert(*revision);
            if revision < before {
                found.push(format!("node {node} served revision {revision} after it had served {before}"));
            }
            *before = (*before).max(*revision);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_serving_older_state_than_before_fails() {
        let mut h = History { stale_reads: vec![(1, 5), (2, 3), (1, 7), (2, 9)], ..History::default() };
        assert!(MonotonicReads.check(&h).is_empty());
        h.stale_reads.push((1, 6));
        let found = MonotonicReads.check(&h);
        assert_eq!(found, vec!["node 1 served revision 6 after it had served 7".to_owned()]);
    }
}
